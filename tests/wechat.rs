//! WeChat channels end to end: a kefu server in this process with a channels file whose
//! accounts' `api_base` points at a local simulator of WeChat's API
//! (`support/wechat_sim.rs`). URL verification (plain and encrypted, with Tencent's own
//! WeCom sample), a text answered passively (plain and encrypted), a retried `MsgId`
//! answered once, a slow answer sent through `custom/send`, tampered signatures and bad
//! bodies refused, a customer-service callback pulled with `kf/sync_msg` and answered
//! with `kf/send_msg` (once, the cursor kept), an expired token refreshed once, a long
//! message split, a send failing with 500 retried by the job queue, a message to a
//! WeChat customer through the sender registered for agents' messages, and photos
//! (`MsgType=image`, customer service's `image`) fetched with `media/get`, taken in and
//! answered by an `on image` rule, or answered as the `image` event when the fetch fails.

mod support;
#[path = "support/wechat_sim.rs"]
mod wechat_sim;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kefu::channels::wechat::crypto::{Cipher, sign};
use kefu::channels::wechat::xml;
use kefu::channels::{ChannelsConfig, Outgoing, SessionKey};
use kefu::server::ServeConfig;
use serde_json::json;
use support::http::{Reply, TestServer, eventually};
use wechat_sim::WechatSim;

/// Tencent's WeCom sample account (token, EncodingAESKey, CorpID), as in the
/// `WXBizMsgCrypt` samples (see `channels::wechat::crypto`'s tests).
const KF_TOKEN: &str = "QDG6eK";
const KF_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
const KF_CORP: &str = "wx5823bf96d3bd56c7";
/// Tencent's Official Account sample (`WXBizMsgCryptTest.java`).
const MP_TOKEN: &str = "pamtest";
const MP_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const MP_APPID: &str = "wxb11529c136998cb6";
/// A plaintext-mode account.
const PLAIN_TOKEN: &str = "plaintoken";
const PLAIN_APPID: &str = "wxplain0000000001";
/// The engine's test shop answers 发票 by rule, 面料 by the model.
const ENGINE: &str = "tests/data/engine";
const INVOICE_REPLY: &str = "下单后在订单详情里申请电子发票即可。";

/// A directory with the secrets and the channels file (accounts pointing at `sim`).
fn channels_file(sim: &WechatSim, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kefu-wechat-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (file, value) in [
        ("mp_token", MP_TOKEN),
        ("mp_key", MP_KEY),
        ("kf_token", KF_TOKEN),
        ("kf_key", KF_KEY),
        ("plain_token", PLAIN_TOKEN),
        ("secret", "app-secret"),
    ] {
        std::fs::write(dir.join(file), value).unwrap();
    }
    let base = sim.base();
    let yaml = format!(
        "wechat:
  - {{name: shop_mp, kind: official_account, app_id: {MP_APPID}, token: {{file: mp_token}}, encoding_aes_key: {{file: mp_key}}, app_secret: {{file: secret}}, api_base: '{base}'}}
  - {{name: plain_mp, kind: official_account, app_id: {PLAIN_APPID}, token: {{file: plain_token}}, app_secret: {{file: secret}}, api_base: '{base}'}}
  - {{name: slow_mp, kind: official_account, app_id: wxslow, token: {{file: plain_token}}, app_secret: {{file: secret}}, api_base: '{base}', reply_within_ms: 100}}
  - {{name: kf, kind: customer_service, app_id: {KF_CORP}, token: {{file: kf_token}}, encoding_aes_key: {{file: kf_key}}, app_secret: {{file: secret}}, api_base: '{base}'}}
"
    );
    std::fs::write(dir.join("channels.yaml"), yaml).unwrap();
    dir
}

fn server(sim: &WechatSim, name: &str) -> (TestServer, PathBuf) {
    server_on(sim, name, ENGINE)
}

fn server_on(sim: &WechatSim, name: &str, rules: &str) -> (TestServer, PathBuf) {
    let dir = channels_file(sim, name);
    let mut config = ServeConfig::new(rules);
    config.watch = false;
    config.channels = Some(Arc::new(ChannelsConfig::load(&dir.join("channels.yaml")).unwrap()));
    config.llm = Some(kefu::server::model::load_mock(Path::new("tests/data/server/slow_mock.yaml")).unwrap());
    config.tickets.state_dir = Some(dir.join("state"));
    // Quick retries, so that a failed send is retried within the test.
    config.jobs.backoff = Duration::from_millis(50);
    (TestServer::start(config), dir)
}

fn now() -> String {
    chrono::Utc::now().timestamp().to_string()
}

/// The XML of a follower's text message.
fn text_xml(to: &str, openid: &str, msg_id: &str, content: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{to}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName><CreateTime>{}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content><MsgId>{msg_id}</MsgId></xml>",
        now()
    )
}

/// POSTs a plaintext-mode message, signed with `token`.
fn post_plain(server: &TestServer, account: &str, token: &str, body: &str) -> Reply {
    let (timestamp, nonce) = (now(), "nonce1");
    let signature = sign(&[token, &timestamp, nonce]);
    let path = format!("/wechat/{account}?signature={signature}&timestamp={timestamp}&nonce={nonce}&openid=o1");
    server.send("POST", &path, &[("content-type", "text/xml")], body)
}

/// POSTs an encrypted-mode message the way WeChat does.
fn post_encrypted(server: &TestServer, account: &str, token: &str, cipher: &Cipher, plain: &str) -> Reply {
    let (timestamp, nonce) = (now(), "1372623149");
    let encrypted = cipher.encrypt(plain.as_bytes());
    let msg_signature = sign(&[token, &timestamp, nonce, &encrypted]);
    let signature = sign(&[token, &timestamp, nonce]);
    let body = format!("<xml><ToUserName><![CDATA[to]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>");
    let path = format!(
        "/wechat/{account}?signature={signature}&timestamp={timestamp}&nonce={nonce}&encrypt_type=aes&msg_signature={msg_signature}"
    );
    server.send("POST", &path, &[("content-type", "text/xml")], &body)
}

/// Turns answered so far (`kefu_answers_total`, all sources).
fn answers(server: &TestServer) -> f64 {
    server
        .get("/metrics")
        .body
        .lines()
        .filter(|l| l.starts_with("kefu_answers_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn url_verification_plain_and_encrypted() {
    let sim = WechatSim::start();
    let (server, _dir) = server(&sim, "verify");
    // Plain: the echostr as it came.
    let (timestamp, nonce) = ("1409304348", "xxxxxx");
    let signature = sign(&[PLAIN_TOKEN, timestamp, nonce]);
    let ok = server.get(&format!(
        "/wechat/plain_mp?signature={signature}&timestamp={timestamp}&nonce={nonce}&echostr=5838479218127813673"
    ));
    assert_eq!((ok.status, ok.body.as_str()), (200, "5838479218127813673"));
    let bad = server.get(&format!(
        "/wechat/plain_mp?signature=0{}&timestamp={timestamp}&nonce={nonce}&echostr=1",
        &signature[1..]
    ));
    assert_eq!((bad.status, bad.error_type().as_str()), (403, "bad_signature"));
    // Encrypted (WeCom): Tencent's sample verification, answered with its plaintext.
    let echostr = "P9nAzCzyDtyTWESHep1vC5X9xho%2FqYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp%2B4RPcs8TgAE7OaBO%2BFZXvnaqQ%3D%3D";
    let ok = server.get(&format!(
        "/wechat/kf?msg_signature=5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3&timestamp=1409659589&nonce=263014780&echostr={echostr}"
    ));
    assert_eq!((ok.status, ok.body.as_str()), (200, "1616140317555161061"));
    let tampered = server.get(&format!(
        "/wechat/kf?msg_signature=5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3&timestamp=1409659590&nonce=263014780&echostr={echostr}"
    ));
    assert_eq!(tampered.status, 403);
    // Customer service never verifies in plaintext.
    assert_eq!(
        server
            .get("/wechat/kf?signature=x&timestamp=1&nonce=2&echostr=3")
            .status,
        403
    );
    let unknown = server.get("/wechat/nope?signature=x");
    assert_eq!((unknown.status, unknown.error_type().as_str()), (404, "not_found"));
}

#[test]
fn a_text_is_answered_passively_once_and_bad_callbacks_are_refused() {
    let sim = WechatSim::start();
    let (server, _dir) = server(&sim, "passive");
    let before = answers(&server);
    let message = text_xml("gh_plain", "o_user1", "10001", "怎么开发票");
    let reply = post_plain(&server, "plain_mp", PLAIN_TOKEN, &message);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let fields = xml::parse(&reply.body).unwrap();
    assert_eq!(fields.get("Content"), Some(INVOICE_REPLY));
    assert_eq!(fields.get("ToUserName"), Some("o_user1"));
    assert_eq!(fields.get("FromUserName"), Some("gh_plain"));
    // WeChat sends it again (it did not hear us in time): `success`, no second turn.
    let again = post_plain(&server, "plain_mp", PLAIN_TOKEN, &message);
    assert_eq!((again.status, again.body.as_str()), (200, "success"));
    assert_eq!(answers(&server), before + 1.0);
    // Tampered signature, stale timestamp, bad XML, a DOCTYPE, a body too large.
    let (timestamp, nonce) = (now(), "n");
    let signature = sign(&["wrong-token", &timestamp, nonce]);
    let forged = server.send(
        "POST",
        &format!("/wechat/plain_mp?signature={signature}&timestamp={timestamp}&nonce={nonce}"),
        &[],
        &text_xml("gh_plain", "o_user1", "10002", "怎么开发票"),
    );
    assert_eq!((forged.status, forged.error_type().as_str()), (403, "bad_signature"));
    let old = "1409304348";
    let signature = sign(&[PLAIN_TOKEN, old, nonce]);
    let stale = server.send(
        "POST",
        &format!("/wechat/plain_mp?signature={signature}&timestamp={old}&nonce={nonce}"),
        &[],
        &text_xml("gh_plain", "o_user1", "10003", "怎么开发票"),
    );
    assert_eq!(stale.status, 403);
    assert_eq!(post_plain(&server, "plain_mp", PLAIN_TOKEN, "<xml><a>").status, 400);
    let doctype = "<!DOCTYPE xml [<!ENTITY a \"b\">]><xml><A>&a;</A></xml>";
    assert_eq!(
        post_plain(&server, "plain_mp", PLAIN_TOKEN, doctype).error_type(),
        "invalid_request"
    );
    let large = format!("<xml><Content>{}</Content></xml>", "x".repeat(70 * 1024));
    assert_eq!(post_plain(&server, "plain_mp", PLAIN_TOKEN, &large).status, 413);
    // An encrypted account refuses plaintext messages.
    assert_eq!(post_plain(&server, "shop_mp", MP_TOKEN, &message).status, 400);
    assert_eq!(answers(&server), before + 1.0, "no refused callback made a turn");
}

#[test]
fn an_encrypted_message_gets_an_encrypted_reply() {
    let sim = WechatSim::start();
    let (server, _dir) = server(&sim, "encrypted");
    let cipher = Cipher::new(MP_KEY, MP_APPID).unwrap();
    let reply = post_encrypted(
        &server,
        "shop_mp",
        MP_TOKEN,
        &cipher,
        &text_xml("gh_shop", "o_user2", "20001", "能开发票吗"),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let envelope = xml::parse(&reply.body).unwrap();
    let encrypted = envelope.get("Encrypt").unwrap();
    // The reply is signed with the account's token...
    let signature = sign(&[
        MP_TOKEN,
        envelope.get("TimeStamp").unwrap(),
        envelope.get("Nonce").unwrap(),
        encrypted,
    ]);
    assert_eq!(envelope.get("MsgSignature"), Some(signature.as_str()));
    // ...and decrypts to a text reply for the follower.
    let plain = String::from_utf8(cipher.decrypt(encrypted).unwrap()).unwrap();
    let fields = xml::parse(&plain).unwrap();
    assert_eq!(fields.get("Content"), Some(INVOICE_REPLY));
    assert_eq!(fields.get("ToUserName"), Some("o_user2"));
    // Encrypted for another AppID: refused.
    let other = Cipher::new(MP_KEY, "wx0000000000000000").unwrap();
    let refused = post_encrypted(
        &server,
        "shop_mp",
        MP_TOKEN,
        &other,
        &text_xml("gh_shop", "o_user2", "20002", "能开发票吗"),
    );
    assert_eq!(refused.status, 403);
}

#[test]
fn a_slow_answer_goes_out_through_custom_send_and_an_expired_token_is_replaced_once() {
    let sim = WechatSim::start();
    let (server, _dir) = server(&sim, "slow");
    // The model takes ~0.4 s; the account waits 0.1 s: `success` at once, the reply later
    // (through the job queue: its first attempt fails with 500 and is retried).
    sim.fail_next_sends(1);
    let started = std::time::Instant::now();
    let reply = post_plain(
        &server,
        "slow_mp",
        PLAIN_TOKEN,
        &text_xml("gh_slow", "o_slow", "30001", "这款是什么面料"),
    );
    assert_eq!((reply.status, reply.body.as_str()), (200, "success"));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        eventually(Duration::from_secs(10), || !sim
            .calls("/message/custom/send")
            .is_empty()),
        "the reply was sent"
    );
    assert!(
        eventually(Duration::from_secs(10), || sim
            .calls("/message/custom/send")
            .iter()
            .any(|c| c.answered == 0)),
        "the reply was sent after a retry"
    );
    let calls = sim.calls("/message/custom/send");
    assert_eq!(calls.iter().map(|c| c.answered).collect::<Vec<_>>(), [500, 0]);
    let sent = &calls[1];
    assert_eq!(sent.body["touser"], "o_slow");
    assert_eq!(sent.body["msgtype"], "text");
    assert!(
        sent.body["text"]["content"].as_str().unwrap().contains("纯棉"),
        "{sent:?}"
    );
    assert_eq!(sim.tokens_issued(), 1);
    let token = &sim.calls("/cgi-bin/token")[0];
    assert!(
        token
            .query
            .contains("grant_type=client_credential&appid=wxslow&secret=app%2Dsecret"),
        "{token:?}"
    );
    // The token dies (another process took a new one): the next send gets 40001, takes
    // a new token once, and goes through.
    sim.expire_token();
    let reply = post_plain(
        &server,
        "slow_mp",
        PLAIN_TOKEN,
        &text_xml("gh_slow", "o_slow", "30002", "这款是什么面料"),
    );
    assert_eq!(reply.body, "success");
    assert!(eventually(Duration::from_secs(10), || {
        sim.calls("/message/custom/send")
            .iter()
            .filter(|c| c.answered == 0)
            .count()
            == 2
    }));
    assert_eq!(sim.tokens_issued(), 2);
    let refused: Vec<_> = sim
        .calls("/message/custom/send")
        .into_iter()
        .filter(|c| c.answered == 40001)
        .collect();
    assert_eq!(refused.len(), 1);
}

fn kf_callback(server: &TestServer, token: &str) -> Reply {
    let cipher = Cipher::new(KF_KEY, KF_CORP).unwrap();
    let plain = format!(
        "<xml><ToUserName><![CDATA[{KF_CORP}]]></ToUserName><CreateTime>{}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[kf_msg_or_event]]></Event><Token><![CDATA[{token}]]></Token><OpenKfId><![CDATA[wkShop]]></OpenKfId></xml>",
        now()
    );
    post_encrypted(server, "kf", KF_TOKEN, &cipher, &plain)
}

#[test]
fn customer_service_pulls_with_sync_msg_and_answers_with_send_msg_once() {
    let sim = WechatSim::start();
    let (server, dir) = server(&sim, "kf");
    let sent_at = chrono::Utc::now().timestamp();
    let page = json!({
        "next_cursor": "CURSOR1",
        "has_more": 0,
        "msg_list": [
            {"msgid": "m1", "open_kfid": "wkShop", "external_userid": "wmCustomer", "send_time": sent_at,
             "origin": 3, "msgtype": "text", "text": {"content": "怎么开发票"}},
            // A servicer's own message (origin 5) and a three-day-old one: not answered.
            {"msgid": "m2", "open_kfid": "wkShop", "external_userid": "wmCustomer", "send_time": sent_at,
             "origin": 5, "msgtype": "text", "text": {"content": "您好"}},
            {"msgid": "m3", "open_kfid": "wkShop", "external_userid": "wmOld", "send_time": sent_at - 3 * 86400,
             "origin": 3, "msgtype": "text", "text": {"content": "怎么开发票"}}
        ]
    });
    sim.queue_kf_page(page.clone());
    let reply = kf_callback(&server, "CALLBACK_TOKEN");
    assert_eq!((reply.status, reply.body.as_str()), (200, "success"));
    assert!(eventually(Duration::from_secs(10), || !sim
        .calls("/kf/send_msg")
        .is_empty()));
    let sync = &sim.calls("/kf/sync_msg")[0];
    assert_eq!(sync.body["token"], "CALLBACK_TOKEN");
    assert!(sync.body.get("cursor").is_none(), "the first pull has no cursor");
    let sent = &sim.calls("/kf/send_msg")[0];
    assert_eq!(sent.body["touser"], "wmCustomer");
    assert_eq!(sent.body["open_kfid"], "wkShop");
    assert_eq!(sent.body["text"]["content"], INVOICE_REPLY);
    assert_eq!(sent.body["msgid"].as_str().unwrap().len(), 32);
    // The cursor is kept, on disk too.
    assert!(eventually(Duration::from_secs(5), || {
        std::fs::read_to_string(dir.join("state/wechat/kf.cursor")).is_ok_and(|c| c == "CURSOR1")
    }));
    // The same messages pulled again (WeChat is unsure): no second answer; the next
    // pull starts from the cursor.
    sim.queue_kf_page(page);
    kf_callback(&server, "CALLBACK_TOKEN2");
    assert!(eventually(Duration::from_secs(10), || sim.calls("/kf/sync_msg").len() == 2));
    assert_eq!(sim.calls("/kf/sync_msg")[1].body["cursor"], "CURSOR1");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sim.calls("/kf/send_msg").len(), 1);
    // The conversation is the customer's, on channel wechat_kf.
    let key = SessionKey::new("wechat_kf", "wkShop", "wmCustomer").unwrap();
    assert!(server.state.engine.session(&key.session_id()).unwrap().is_some());
}

#[test]
fn messages_to_wechat_customers_go_through_the_registered_senders_split_and_retried() {
    let sim = WechatSim::start();
    let (server, _dir) = server(&sim, "senders");
    let mp = server.state.outbound.sender("wechat_mp").expect("registered");
    // A 3,000-byte message: two texts, each within WeChat's 2,048 bytes, nothing lost.
    let long = format!("{}\n{}", "您好，".repeat(200), "售后".repeat(250));
    let message = Outgoing {
        key: SessionKey::new("wechat_mp", PLAIN_APPID, "o_agent").unwrap(),
        text: long.clone(),
        id: "ch:wechat_mp:x:o_agent#7".into(),
        choices: vec![],
    };
    mp.send(&message).unwrap();
    let parts: Vec<String> = sim
        .calls("/message/custom/send")
        .iter()
        .map(|c| c.body["text"]["content"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(parts.len(), 2);
    assert!(parts.iter().all(|p| p.len() <= 2048));
    assert_eq!(parts.concat().replace('\n', ""), long.replace('\n', ""));
    // A failure halfway (the second part answered 500: temporary): the retry sends only
    // what is missing.
    sim.fail_sends_after(1, 1);
    let message = Outgoing {
        id: "ch:wechat_mp:x:o_agent#8".into(),
        ..message
    };
    assert!(matches!(mp.send(&message), Err(kefu::jobs::JobError::Temporary(_))));
    mp.send(&message).unwrap();
    let sent: Vec<String> = sim
        .calls("/message/custom/send")
        .iter()
        .filter(|c| c.answered == 0)
        .map(|c| c.body["text"]["content"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(sent, [&parts[..], &parts[..]].concat(), "each part once per message");
    // Customer service: one account configured, so every open_kfid is its; a 500 is a
    // temporary failure (the job queue retries it), the next attempt goes through.
    sim.fail_next_sends(1);
    let kf = server.state.outbound.sender("wechat_kf").expect("registered");
    let agent = Outgoing {
        key: SessionKey::new("wechat_kf", "wkShop", "wmAgent").unwrap(),
        text: "您好，我是客服小王".into(),
        id: "ch:wechat_kf:wkShop:wmAgent#3".into(),
        choices: vec![],
    };
    assert!(matches!(kf.send(&agent), Err(kefu::jobs::JobError::Temporary(_))));
    kf.send(&agent).unwrap();
    let sent: Vec<_> = sim
        .calls("/kf/send_msg")
        .into_iter()
        .filter(|c| c.answered == 0)
        .collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].body["touser"], "wmAgent");
}

#[test]
fn the_channels_file_refuses_bad_wechat_accounts() {
    let sim = WechatSim::start();
    let dir = channels_file(&sim, "config");
    let load = |entry: &str| {
        let path = dir.join("bad.yaml");
        std::fs::write(&path, format!("wechat:\n  - {entry}\n")).unwrap();
        ChannelsConfig::load(&path).map(drop).map_err(|e| e.to_string())
    };
    let base = "name: a, app_id: wx1, token: {file: mp_token}, app_secret: {file: secret}";
    assert!(load(&format!("{{{base}, kind: official_account}}")).is_ok());
    // The EncodingAESKey must be the 43 characters the admin page shows.
    let short = load(&format!(
        "{{{base}, kind: official_account, encoding_aes_key: {{file: secret}}}}"
    ))
    .unwrap_err();
    assert!(short.contains("encoding_aes_key must be the 43 characters"), "{short}");
    let kf = load(&format!("{{{base}, kind: customer_service}}")).unwrap_err();
    assert!(kf.contains("customer service always encrypts"), "{kf}");
    let slow = load(&format!("{{{base}, kind: official_account, reply_within_ms: 5000}}")).unwrap_err();
    assert!(slow.contains("reply_within_ms must be 1-4800"), "{slow}");
    let missing =
        load("{name: a, app_id: wx1, token: {file: mp_token}, app_secret: {file: nope}, kind: official_account}")
            .unwrap_err();
    assert!(missing.contains("nope"), "{missing}");
    assert!(!missing.contains("app-secret"), "no secret in errors: {missing}");
}

/// The photo shop: `on image` answers a photo taken in, `on event image` one that was not.
const PHOTOS: &str = "tests/data/photos";
/// A real 64×48 JPEG (`tests/data/photos/parcel.jpg`).
const PARCEL: &[u8] = include_bytes!("data/photos/parcel.jpg");

/// The XML of a follower's photo message.
fn image_xml(to: &str, openid: &str, msg_id: &str, media_id: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{to}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName><CreateTime>{}</CreateTime><MsgType><![CDATA[image]]></MsgType><PicUrl><![CDATA[http://mmbiz.qpic.cn/x]]></PicUrl><MediaId><![CDATA[{media_id}]]></MediaId><MsgId>{msg_id}</MsgId></xml>",
        now()
    )
}

/// `kefu_channel_messages_total{channel, outcome}`.
fn channel_messages(server: &TestServer, channel: &str, outcome: &str) -> f64 {
    let needle = format!("channel=\"{channel}\",outcome=\"{outcome}\"");
    server
        .get("/metrics")
        .body
        .lines()
        .filter(|l| l.starts_with("kefu_channel_messages_total") && l.contains(&needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn an_official_account_photo_is_fetched_taken_in_and_answered_by_the_image_rule() {
    let sim = WechatSim::start();
    sim.put_media("M_PARCEL", PARCEL.to_vec());
    let (server, _dir) = server_on(&sim, "photo-mp", PHOTOS);
    let reply = post_plain(
        &server,
        "plain_mp",
        PLAIN_TOKEN,
        &image_xml("gh_shop", "o_photo", "7001", "M_PARCEL"),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let answer = xml::parse(&reply.body).unwrap();
    assert_eq!(answer.text("MsgType"), "text");
    assert_eq!(answer.text("Content"), "照片收到了（64×48），我们马上为您查看。");
    // Fetched once, with the account's token and the message's media id.
    let fetched = sim.calls("/cgi-bin/media/get");
    assert_eq!(fetched.len(), 1);
    assert!(fetched[0].query.contains("media_id=M%5FPARCEL"), "{}", fetched[0].query);
    // The agent sees the photo with the customer's message (tests/images.rs serves it).
    let key = SessionKey::new("wechat_mp", PLAIN_APPID, "o_photo").unwrap();
    let detail = server.state.inbox.detail(&key.session_id()).expect("in the inbox");
    let images = &detail.messages[0].images;
    assert_eq!(images.len(), 1, "{:?}", detail.messages);
    assert_eq!(
        (images[0].kind.as_str(), images[0].width, images[0].height),
        ("jpeg", 64, 48)
    );
    assert!(images[0].id.starts_with("img_"), "{}", images[0].id);
    assert_eq!(channel_messages(&server, "wechat_mp", "photo_failed"), 0.0);

    // A media id WeChat does not know (expired after three days): the image event, once
    // counted, and the conversation goes on.
    let reply = post_plain(
        &server,
        "plain_mp",
        PLAIN_TOKEN,
        &image_xml("gh_shop", "o_photo", "7002", "M_GONE"),
    );
    assert_eq!(
        xml::parse(&reply.body).unwrap().text("Content"),
        "图片没有收到，请再发一次。"
    );
    assert_eq!(channel_messages(&server, "wechat_mp", "photo_failed"), 1.0);
    let reply = post_plain(
        &server,
        "plain_mp",
        PLAIN_TOKEN,
        &text_xml("gh_shop", "o_photo", "7003", "怎么开发票"),
    );
    assert_eq!(xml::parse(&reply.body).unwrap().text("Content"), INVOICE_REPLY);
}

#[test]
fn a_customer_service_photo_is_fetched_and_answered_with_send_msg() {
    let sim = WechatSim::start();
    sim.put_media("KF_PARCEL", PARCEL.to_vec());
    // Not an image at all, whatever WeChat calls it: the intake refuses it by its bytes.
    sim.put_media("KF_TEXT", b"not a photo, just text".to_vec());
    let (server, _dir) = server_on(&sim, "photo-kf", PHOTOS);
    let sent_at = chrono::Utc::now().timestamp();
    sim.queue_kf_page(json!({
        "next_cursor": "CURSOR1",
        "has_more": 0,
        "msg_list": [
            {"msgid": "p1", "open_kfid": "wkShop", "external_userid": "wmPhoto", "send_time": sent_at,
             "origin": 3, "msgtype": "image", "image": {"media_id": "KF_PARCEL"}},
            {"msgid": "p2", "open_kfid": "wkShop", "external_userid": "wmPhoto", "send_time": sent_at,
             "origin": 3, "msgtype": "image", "image": {"media_id": "KF_TEXT"}}
        ]
    }));
    kf_callback(&server, "CALLBACK_TOKEN");
    assert!(eventually(Duration::from_secs(10), || sim.calls("/kf/send_msg").len() == 2));
    let texts: Vec<String> = sim
        .calls("/kf/send_msg")
        .iter()
        .map(|c| c.body["text"]["content"].as_str().unwrap().to_string())
        .collect();
    // In order: the photo by the image rule, the text file as the image event.
    assert_eq!(
        texts,
        ["照片收到了（64×48），我们马上为您查看。", "图片没有收到，请再发一次。"]
    );
    assert_eq!(sim.calls("/cgi-bin/media/get").len(), 2, "both fetched");
    assert_eq!(channel_messages(&server, "wechat_kf", "photo_failed"), 1.0);
}
