//! STUB for part H (issue #24): H owns this file (it declares `widget`, `wechat` and
//! `webhook`); part X declares only its own module here until H's branch lands.

pub mod wechat;
