//! WeChat's callbacks: `GET|POST /wechat/{name}` for Official Accounts and customer
//! service, and the senders of `wechat_mp` and `wechat_kf` (part X of issue #24 writes
//! it; this header keeps the module declared meanwhile).
