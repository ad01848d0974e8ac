//! Grammar tests: what `grammar/kefu.pest` accepts and rejects, token by token.

use kefu::dsl::parse::{KefuParser, Rule};
use pest::{consumes_to, fails_with, parses_to};

#[test]
fn durations_dates_and_numbers() {
    parses_to! { parser: KefuParser, input: "800ms", rule: Rule::duration, tokens: [duration(0, 5)] };
    parses_to! { parser: KefuParser, input: "30m", rule: Rule::duration, tokens: [duration(0, 3)] };
    parses_to! {
        parser: KefuParser, input: "2026-11-11 23:59", rule: Rule::datetime,
        tokens: [datetime(0, 16, [date(0, 10), time(11, 16)])]
    };
    parses_to! { parser: KefuParser, input: "2026-11-01", rule: Rule::datetime, tokens: [datetime(0, 10, [date(0, 10)])] };
    parses_to! { parser: KefuParser, input: "-0.5", rule: Rule::number, tokens: [number(0, 4)] };
}

#[test]
fn names_and_intent_patterns_take_cjk() {
    parses_to! { parser: KefuParser, input: "七天无理由", rule: Rule::name, tokens: [name(0, 15)] };
    parses_to! { parser: KefuParser, input: "售后.退货.七天", rule: Rule::intent_name, tokens: [intent_name(0, 20)] };
    parses_to! { parser: KefuParser, input: "售后.*", rule: Rule::intent_pattern, tokens: [intent_pattern(0, 8)] };
    parses_to! { parser: KefuParser, input: "*", rule: Rule::intent_pattern, tokens: [intent_pattern(0, 1)] };
}

#[test]
fn strings_expressions_and_regexes() {
    parses_to! {
        parser: KefuParser, input: r#""点击“申请售后”\n""#, rule: Rule::string,
        tokens: [string(0, 28, [short_string(0, 28, [short_string_body(1, 27)])])]
    };
    parses_to! {
        parser: KefuParser, input: "\"\"\"\n  多行\n  文本\n\"\"\"", rule: Rule::string,
        tokens: [string(0, 25, [long_string(0, 25, [long_string_body(3, 22)])])]
    };
    parses_to! {
        parser: KefuParser, input: "`order != () &&\n order.signed_days <= 7`", rule: Rule::expr,
        tokens: [expr(0, 40, [expr_body(1, 39)])]
    };
    parses_to! {
        parser: KefuParser, input: r"/\d{12}\/x/i", rule: Rule::regex,
        tokens: [regex(0, 12, [regex_body(1, 10), regex_flags(11, 12)])]
    };
}

#[test]
fn quotes_inside_a_template_hole_do_not_end_the_string() {
    let input = r#""{if user.segment == "vip" {"尊敬的会员"} else {"亲"}}，您好""#;
    parses_to! {
        parser: KefuParser, input: input, rule: Rule::string,
        tokens: [string(0, input.len(), [short_string(0, input.len(), [short_string_body(1, input.len() - 1)])])]
    };
    // An unclosed hole is plain text to the grammar (the template check reports it), so
    // the quote after it still ends the string.
    let input = r#""订单 {order.id 已签收" x"#;
    parses_to! {
        parser: KefuParser, input: input, rule: Rule::string,
        tokens: [string(0, 28, [short_string(0, 28, [short_string_body(1, 27)])])]
    };
}

#[test]
fn a_string_must_close_on_its_own_line() {
    fails_with! {
        parser: KefuParser, input: "\"未闭合\n\"", rule: Rule::short_string,
        positives: vec![Rule::short_string], negatives: vec![], pos: 0
    };
}

#[test]
fn keywords_do_not_run_into_names() {
    // `rules` is not the keyword `rule` followed by a name `s`.
    fails_with! {
        parser: KefuParser, input: "rules x { }", rule: Rule::rule,
        positives: vec![Rule::kw_rule], negatives: vec![], pos: 0
    };
    parses_to! {
        parser: KefuParser, input: "rule 缩水 { on keywords \"缩水\" reply \"不会\" }", rule: Rule::rule,
        // pest skips the blank before an (empty) repetition inside the rule, so a list's
        // span ends after the blank that follows it.
        tokens: [rule(0, 51, [
            kw_rule(0, 4), name(5, 11), lbrace(12, 13),
            trigger(14, 35, [kw_on(14, 16), keyword_trigger(17, 35, [kw_keywords(17, 25),
                string_list(26, 35, [string(26, 34, [short_string(26, 34, [short_string_body(27, 33)])])])])]),
            reply(35, 50, [kw_reply(35, 40), texts(41, 50, [string(41, 49, [short_string(41, 49, [short_string_body(42, 48)])])])]),
            rbrace(50, 51)
        ])]
    };
}

/// `on event NAME` is an event trigger, not an intent named `event`; an intent of that name
/// alone is still one.
#[test]
fn an_event_trigger_names_its_event() {
    parses_to! {
        parser: KefuParser, input: "on event subscribe", rule: Rule::trigger,
        tokens: [trigger(0, 18, [kw_on(0, 2), event_trigger(3, 18, [kw_event(3, 8), name(9, 18)])])]
    };
    parses_to! {
        parser: KefuParser, input: "on event", rule: Rule::trigger,
        tokens: [trigger(0, 8, [kw_on(0, 2), intent_trigger(3, 8, [intent_pattern(3, 8)])])]
    };
    parses_to! {
        parser: KefuParser, input: "start on event scan", rule: Rule::flow_start,
        tokens: [flow_start(0, 19, [kw_start(0, 5), kw_on(6, 8), event_trigger(9, 19, [kw_event(9, 14), name(15, 19)])])]
    };
}

#[test]
fn flow_steps_nest() {
    let input = "flow f { start on 售后.退货 ask order_id \"单号？\" retry 2 else handoff \"x\" if `a` { goto order_id } else { end } }";
    let pairs = <KefuParser as pest::Parser<Rule>>::parse(Rule::flow, input).expect("flow parses");
    let rules: Vec<Rule> = pairs
        .flatten()
        .map(|p| p.as_rule())
        .filter(|r| !format!("{r:?}").starts_with("kw_"))
        .collect();
    for expected in [
        Rule::flow_start,
        Rule::ask,
        Rule::retry,
        Rule::else_step,
        Rule::handoff,
        Rule::if_step,
        Rule::block,
        Rule::goto,
        Rule::end,
    ] {
        assert!(rules.contains(&expected), "{expected:?} missing from {rules:?}");
    }
}

#[test]
fn the_dsl_contract_example_and_the_demo_shop_parse_without_syntax_errors() {
    for dir in ["tests/data/dsl_example", "rules"] {
        let compiled = kefu::dsl::load_dir(std::path::Path::new(dir));
        assert!(!compiled.report.has_errors(), "{dir}:\n{}", compiled.report);
    }
}

#[test]
fn a_fallback_arm_replies_and_hands_off_in_either_order() {
    let input = "fallback { when `a` reply \"转人工\" handoff \"原因\" otherwise handoff reply \"好的\" }";
    let pairs = <KefuParser as pest::Parser<Rule>>::parse(Rule::fallback, input).expect("fallback parses");
    let arms: Vec<Vec<Rule>> = pairs
        .flatten()
        .filter(|p| p.as_rule() == Rule::fallback_arm)
        .map(|arm| arm.into_inner().map(|p| p.as_rule()).collect())
        .collect();
    assert_eq!(
        arms,
        [
            vec![Rule::when, Rule::reply, Rule::handoff],
            vec![Rule::otherwise, Rule::handoff, Rule::reply],
        ]
    );
}

#[test]
fn an_ask_may_list_re_ask_texts_before_its_retry() {
    let input = "ask order_id \"单号？\" reask \"没看到单号\", \"请发12位单号\" retry 3 else handoff";
    let pairs = <KefuParser as pest::Parser<Rule>>::parse(Rule::ask, input).expect("ask parses");
    let rules: Vec<Rule> = pairs.flatten().map(|p| p.as_rule()).collect();
    assert!(
        rules.contains(&Rule::reask) && rules.contains(&Rule::retry),
        "{rules:?}"
    );
    let texts = rules.iter().filter(|r| **r == Rule::short_string).count();
    assert_eq!(texts, 3, "the question and two re-ask texts");
    // After `retry`, `reask` is not read as part of the ask.
    assert!(
        <KefuParser as pest::Parser<Rule>>::parse(Rule::file, "flow f { ask x \"q\" retry 2 reask \"a\" }").is_err()
    );
}

#[test]
fn a_text_takes_variants_after_language_codes_but_not_after_keywords() {
    let input = "rule 缩水 { on keywords \"缩水\" reply \"不会\" en \"No\" ja \"いいえ\" priority 2 }";
    let pairs = <KefuParser as pest::Parser<Rule>>::parse(Rule::rule, input).expect("rule parses");
    let codes: Vec<&str> = pairs
        .flatten()
        .filter(|p| p.as_rule() == Rule::lang_code)
        .map(|p| p.as_str())
        .collect();
    assert_eq!(codes, ["en", "ja"]);
    // A short keyword followed by a string is the next field, not a variant: `say "…"`
    // after a promotion's text, `set` after a flow's question.
    let input = "promotion p { from 2026-01-01 to 2026-12-31 say \"a\" say \"b\" }";
    let pairs = <KefuParser as pest::Parser<Rule>>::parse(Rule::promotion, input).expect("promotion parses");
    assert_eq!(pairs.flatten().filter(|p| p.as_rule() == Rule::variant).count(), 0);
    let input = "flow f { ask x \"q\" en \"Q?\"\n set y = `1` }";
    let pairs = <KefuParser as pest::Parser<Rule>>::parse(Rule::flow, input).expect("flow parses");
    assert_eq!(pairs.flatten().filter(|p| p.as_rule() == Rule::variant).count(), 1);
}

#[test]
fn a_handoff_may_name_its_kind_and_queue_in_that_order() {
    let input = "handoff \"顾客要求\" as asked to 售后";
    parses_to! {
        parser: KefuParser, input: input, rule: Rule::handoff,
        tokens: [handoff(0, 41, [
            kw_handoff(0, 7),
            string(8, 22, [short_string(8, 22, [short_string_body(9, 21)])]),
            handoff_as(23, 31, [kw_as(23, 25), name(26, 31)]),
            handoff_to(32, 41, [kw_to(32, 34), name(35, 41)])
        ])]
    };
    parses_to! {
        parser: KefuParser, input: "handoff to VIP", rule: Rule::handoff,
        tokens: [handoff(0, 14, [kw_handoff(0, 7), handoff_to(8, 14, [kw_to(8, 10), name(11, 14)])])]
    };
    // `to` before `as` is not the order the language writes: the handoff stops at `to VIP`.
    let pairs = <KefuParser as pest::Parser<Rule>>::parse(Rule::handoff, "handoff to VIP as asked").unwrap();
    assert_eq!(pairs.as_str(), "handoff to VIP");
}

#[test]
fn a_queue_holds_its_fields_in_any_order() {
    let input = "queue 售后 {\n  waiting \"第 {queue.position} 位\"\n  for `intent == \"售后\"`\n  priority 5\n  hours \"09:00-23:00\"\n  off_hours \"下班了\" en \"Closed\"\n  label \"售后组\"\n}";
    let pairs = <KefuParser as pest::Parser<Rule>>::parse(Rule::queue, input).expect("queue parses");
    let fields: Vec<Rule> = pairs
        .flatten()
        .filter(|p| {
            matches!(
                p.as_rule(),
                Rule::label | Rule::audience | Rule::priority | Rule::hours | Rule::off_hours | Rule::waiting
            )
        })
        .map(|p| p.as_rule())
        .collect();
    assert_eq!(
        fields,
        [
            Rule::waiting,
            Rule::audience,
            Rule::priority,
            Rule::hours,
            Rule::off_hours,
            Rule::label
        ]
    );
    // A queue says nothing itself: a `reply` in it is a syntax error.
    assert!(<KefuParser as pest::Parser<Rule>>::parse(Rule::queue, "queue 售后 { reply \"x\" }").is_err());
}
