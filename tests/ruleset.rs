//! What lowering builds: the compiled rule set behaves as the rule files say.

mod support;

use std::path::Path;

use kefu::RuleSet;
use kefu::ruleset::{Owner, Trigger};
use rhai::{Dynamic, Map, Scope};

fn lowering() -> RuleSet {
    let (compiled, rendered) = support::check(Path::new("tests/data/lowering"));
    compiled
        .rules
        .unwrap_or_else(|| panic!("lowering fixture must compile:\n{rendered}"))
}

fn user(segment: &str) -> Map {
    let mut user = Map::new();
    user.insert("segment".into(), segment.into());
    user.insert("name".into(), "小王".into());
    user
}

#[test]
fn rules_are_in_answer_order_and_keyword_lookup_finds_them() {
    let rules = lowering();
    let names: Vec<&str> = rules.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["优先", "普通", "死循环", "售后总", "称呼"]);
    let owners: Vec<Owner> = rules.triggers.keyword_owners("我要开发票").into_iter().collect();
    assert_eq!(owners, [Owner::Rule(0), Owner::Rule(1)]);
    assert!(rules.triggers.keyword_owners("我要退货").contains(&Owner::Intent(0)));
    let by_pattern: Vec<Owner> = rules.triggers.pattern_owners("售后").collect();
    assert_eq!(by_pattern, [Owner::Rule(3)]);
    let exact: Vec<Owner> = rules.triggers.intent_owners("售后.换货").collect();
    assert_eq!(exact, [Owner::FlowStart { flow: 0, start: 0 }]);
}

#[test]
fn conditions_and_templates_evaluate_in_a_scope() {
    let rules = lowering();
    let vip = &rules.rules[0];
    let mut scope = Scope::new();
    scope.push("user", user("vip"));
    assert!(vip.when.as_ref().unwrap().eval_bool(&rules.engine, &mut scope).unwrap());
    let reply = vip
        .reply
        .as_ref()
        .unwrap()
        .default
        .render(&rules.engine, &mut scope)
        .unwrap();
    assert_eq!(reply, "VIP 专票 小王");
    let mut scope = Scope::new();
    scope.push("user", user("new"));
    assert!(!vip.when.as_ref().unwrap().eval_bool(&rules.engine, &mut scope).unwrap());
}

#[test]
fn a_template_hole_may_hold_quoted_strings() {
    let rules = lowering();
    let greeting = rules.rule("称呼").unwrap().reply.as_ref().unwrap();
    for (segment, expected) in [("vip", "尊敬的会员，您好"), ("new", "亲，您好")] {
        let mut scope = Scope::new();
        scope.push("user", user(segment));
        assert_eq!(greeting.default.render(&rules.engine, &mut scope).unwrap(), expected);
    }
}

#[test]
fn a_runaway_loop_in_a_rule_is_stopped_by_the_sandbox() {
    let rules = lowering();
    let runaway = rules.rule("死循环").unwrap();
    let error = runaway
        .when
        .as_ref()
        .unwrap()
        .eval_bool(&rules.engine, &mut Scope::new())
        .unwrap_err();
    assert!(error.limit, "{error}");
    // Whichever bound it reaches first: the operation count, or on a loaded machine the
    // script's CPU-time limit.
    assert!(
        error.message.contains("Too many operations") || error.message.contains("time limit"),
        "{}",
        error.message
    );
}

#[test]
fn file_sources_are_script_functions_keyed_by_string_or_number() {
    let rules = lowering();
    let order: Dynamic = rules.engine.eval(r#"orders("202611010001")"#).unwrap();
    let order = order.cast::<Map>();
    assert_eq!(order["signed_days"].as_int().unwrap(), 3);
    let missing: Dynamic = rules.engine.eval(r#"orders("999")"#).unwrap();
    assert!(missing.is_unit());
    // A numeric id in YAML is found by its decimal text.
    let numeric: Dynamic = rules.engine.eval(r#"orders("202611010002")"#).unwrap();
    assert!(numeric.is_map());
}

#[test]
fn promotion_windows_are_whole_days_in_the_shop_time_zone() {
    let rules = lowering();
    let promo = &rules.promotions[0];
    assert_eq!(promo.from.to_rfc3339(), "2026-11-01T00:00:00+08:00");
    assert_eq!(promo.to.to_rfc3339(), "2026-11-11T23:59:59+08:00");
    let utc = chrono::DateTime::parse_from_rfc3339("2026-11-11T15:59:59Z").unwrap();
    assert!(promo.is_on(&utc));
    let utc = chrono::DateTime::parse_from_rfc3339("2026-11-11T16:00:00Z").unwrap();
    assert!(!promo.is_on(&utc));
    // The DSL example's `to 2026-11-11 23:59` includes the whole last minute.
    let example = kefu::dsl::load_dir(Path::new("tests/data/dsl_example")).rules.unwrap();
    assert_eq!(example.promotions[0].to.to_rfc3339(), "2026-11-11T23:59:59+08:00");
    assert_eq!(promo.triggers, [Trigger::Keywords(vec!["双11".into()])]);
}

#[test]
fn a_flow_compiles_to_a_program() {
    let rules = lowering();
    let flow = rules.flow("换货申请").unwrap();
    assert_eq!(flow.slots.iter().collect::<Vec<_>>(), ["new_color", "order_id"]);
    insta::assert_snapshot!(flow.listing());
}

#[test]
fn a_fallback_arm_may_reply_and_hand_off_in_either_order() {
    use kefu::ruleset::FallbackAction;
    let rules = lowering();
    let arms: Vec<(Option<&str>, Option<&str>, &str)> = rules
        .fallback
        .iter()
        .filter_map(|arm| match &arm.action {
            FallbackAction::Handoff { handoff, reply } => Some((
                handoff.reason.as_deref(),
                reply.as_ref().and_then(|t| t.default.as_literal()),
                handoff.kind.name(),
            )),
            _ => None,
        })
        .collect();
    // Without `as`, an arm's kind is what its condition reads: `session.failures` for
    // failures in a row, `emotion` for anger, else no confident answer.
    assert_eq!(
        arms,
        [
            (Some("连续两次未能解决"), Some("这就为您转人工"), "repeated_failure"),
            (Some("客户情绪激动"), Some("非常抱歉，马上请同事来处理"), "anger"),
            (None, None, "low_confidence"),
        ]
    );
}

#[test]
fn re_ask_texts_are_kept_in_order() {
    use kefu::ruleset::OpKind;
    let rules = lowering();
    let flow = rules.flow("换货申请").unwrap();
    let reasks: Vec<&str> = flow
        .ops
        .iter()
        .find_map(|op| match &op.kind {
            OpKind::Ask { slot, reasks, .. } if slot == "new_color" => {
                Some(reasks.iter().filter_map(|t| t.default.as_literal()).collect())
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(reasks, ["没听清，换成什么颜色？", "目前有红色和黑色，换哪个？"]);
}

#[test]
fn the_version_is_a_hash_of_every_file_read() {
    let dir = std::env::temp_dir().join(format!("kefu-version-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["shop.kefu", "orders.yaml"] {
        std::fs::copy(Path::new("tests/data/lowering").join(f), dir.join(f)).unwrap();
    }
    let first = kefu::dsl::load_dir(&dir).rules.unwrap().version;
    assert_eq!(
        first,
        kefu::dsl::load_dir(&dir).rules.unwrap().version,
        "the hash is deterministic"
    );
    // A change to a data file alone is a new version: reloads pick up data edits.
    std::fs::write(dir.join("orders.yaml"), "- id: \"1\"\n").unwrap();
    let second = kefu::dsl::load_dir(&dir).rules.unwrap().version;
    assert_ne!(first, second);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn identical_rules_in_two_directories_are_one_version() {
    let base = std::env::temp_dir().join(format!("kefu-version-copies-{}", std::process::id()));
    let version = |name: &str, file: &str| {
        let dir = base.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy("tests/data/lowering/shop.kefu", dir.join(file)).unwrap();
        std::fs::copy("tests/data/lowering/orders.yaml", dir.join("orders.yaml")).unwrap();
        kefu::dsl::load_dir(&dir).rules.unwrap().version
    };
    let on_node_a = version("node-a", "shop.kefu");
    assert_eq!(on_node_a, version("elsewhere/node-b", "shop.kefu"));
    // A file's name inside the directory is part of what was published.
    assert_ne!(on_node_a, version("node-c", "main.kefu"));
    std::fs::remove_dir_all(&base).unwrap();
}

/// `proactive` items, the shop's proactive settings, `on image` and `ask … as image`.
#[test]
fn proactive_items_photo_triggers_and_photo_asks_are_lowered() {
    use kefu::ruleset::{IMAGE_SLOT, OpKind};
    let (compiled, rendered) = support::check(Path::new("tests/data/lowering_proactive"));
    let rules = compiled
        .rules
        .unwrap_or_else(|| panic!("proactive fixture must compile:\n{rendered}"));
    assert!(compiled.report.diagnostics.is_empty(), "{rendered}");

    let shop = &rules.shop;
    assert_eq!(shop.proactive_limit, 3);
    let quiet = shop.quiet_hours.expect("the shop's quiet hours");
    let at = |h, m| chrono::NaiveTime::from_hms_opt(h, m, 0).unwrap();
    assert!(quiet.contains(at(21, 30)) && quiet.contains(at(3, 0)) && quiet.contains(at(8, 59)));
    assert!(!quiet.contains(at(9, 0)) && !quiet.contains(at(21, 29)));
    assert_eq!(shop.opt_out_message.default, "好的，不再打扰您啦～");
    assert_eq!(
        shop.opt_out_message.pick(kefu::nlu::Lang::parse("en").unwrap()),
        "OK, no more messages from us."
    );

    let names: Vec<&str> = rules.proactive.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["催付提醒", "发货通知"], "highest priority first");
    let nudge = &rules.proactive[0];
    assert_eq!(nudge.events, ["checkout_abandoned", "cart_changed"]);
    assert_eq!(nudge.offer.as_deref(), Some("回归礼"));
    assert_eq!(nudge.per_day, 2);
    assert_eq!(nudge.priority, 5);
    let own = nudge.quiet.expect("its own quiet hours");
    assert!(own.contains(at(22, 0)) && !own.contains(at(21, 30)));
    assert!(nudge.location.ends_with("shop.kefu:21"), "{}", nudge.location);
    let shipped = &rules.proactive[1];
    assert_eq!(
        (shipped.per_day, shipped.quiet, shipped.offer.as_deref()),
        (1, None, None)
    );
    assert!(shipped.when.is_none());

    // The condition and the message run in the proactive scope: `event` is a map.
    let mut event = Map::new();
    event.insert("type".into(), "checkout_abandoned".into());
    event.insert("total".into(), Dynamic::from(150_i64));
    event.insert("order_id".into(), "202611010001".into());
    let mut scope = Scope::new();
    scope.push("event", event);
    scope.push("user", user("vip"));
    assert!(
        nudge
            .when
            .as_ref()
            .unwrap()
            .eval_bool(&rules.engine, &mut scope)
            .unwrap()
    );
    let text = shipped.say.default.render(&rules.engine, &mut scope).unwrap();
    assert_eq!(text, "亲，您的订单 202611010001 已发货～");

    // `on image` owners: the rule and the flow's start.
    let owners: Vec<Owner> = rules.triggers.image_owners().collect();
    assert_eq!(owners, [Owner::Rule(0), Owner::FlowStart { flow: 0, start: 0 }]);
    assert_eq!(rules.rules[0].triggers, [Trigger::Image]);
    let ask = rules.flows[0]
        .ops
        .iter()
        .find_map(|op| match &op.kind {
            OpKind::Ask { slot, entity, .. } => Some((slot.as_str(), entity.as_deref())),
            _ => None,
        })
        .expect("the photo ask");
    assert_eq!(ask, ("照片", Some(IMAGE_SLOT)));
}
