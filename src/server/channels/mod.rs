//! The channels' HTTP routes: the web widget's script and CORS ([`widget`]). The protocol
//! pieces and the channels file are in [`crate::channels`], which knows nothing of HTTP.

pub mod widget;
