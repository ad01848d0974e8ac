//! Whether two promotions' audiences (`for` conditions) can hold for the same customer at
//! once, so that the overlap warning is given only when they can.
//!
//! The analysis is small and sound: it proves two audiences disjoint only from what it
//! fully understands, and answers "may overlap" for everything else. It reads an audience
//! as a disjunction of conjunctions of facts about *paths* (a variable and the properties
//! under it: `user.segment`, `user["segment"]`, `cart?.total`), each fact one of:
//!
//! - `p == lit`, `p in [lit, …]`: the value is one of these literals;
//! - `p != lit`, `!(p in […])`: it is none of them;
//! - `p < n`, `p >= n`, …: it is a number in that range;
//! - `p` alone: it is `true`; `!p`: it is `false`.
//!
//! These follow from how a condition holds (scripts.rs, `eval_bool`): only the boolean
//! `true` holds; `&&`, `||` and `!` fail on anything but booleans, and a failing condition
//! does not hold; `==` between values of different types is false, and a comparison with
//! `()` or with text is not true. So `p` holding means `p` is `true`, `!p` holding means it
//! is `false`, and `p >= 300` holding means it is a number of at least 300. Two audiences
//! are disjoint when every conjunction of one contradicts every conjunction of the other on
//! some path. Anything else (a function call, `??`, a negated comparison, several
//! statements, more than [`MAX_TERMS`] conjunctions) is a fact the analysis does not read,
//! which contradicts nothing.

use std::collections::BTreeMap;

use rhai::{Dynamic, Expr, Stmt};

/// Conjunctions an audience may expand to before the analysis gives up (and warns).
const MAX_TERMS: usize = 64;

/// A literal an audience compares with. Numbers compare by value, as rhai compares an
/// integer with a float.
#[derive(Clone, Debug, PartialEq)]
enum Lit {
    Str(String),
    Num(f64),
    Bool(bool),
    Unit,
}

impl Lit {
    fn of_expr(expr: &Expr) -> Option<Lit> {
        Some(match expr {
            Expr::StringConstant(s, _) => Lit::Str(s.to_string()),
            Expr::IntegerConstant(n, _) => Lit::Num(*n as f64),
            Expr::FloatConstant(f, _) => Lit::Num(**f),
            Expr::BoolConstant(b, _) => Lit::Bool(*b),
            Expr::Unit(_) => Lit::Unit,
            Expr::DynamicConstant(value, _) => return Lit::of_dynamic(value),
            _ => return None,
        })
    }

    fn of_dynamic(value: &Dynamic) -> Option<Lit> {
        if value.is_unit() {
            return Some(Lit::Unit);
        }
        if let Ok(b) = value.as_bool() {
            return Some(Lit::Bool(b));
        }
        if let Ok(n) = value.as_int() {
            return Some(Lit::Num(n as f64));
        }
        if let Ok(f) = value.as_float() {
            return Some(Lit::Num(f));
        }
        value
            .clone()
            .into_immutable_string()
            .ok()
            .map(|s| Lit::Str(s.to_string()))
    }

    /// The elements of an array literal (`["vip", "svip"]`), when all are literals.
    fn list(expr: &Expr) -> Option<Vec<Lit>> {
        match expr {
            Expr::Array(items, _) => items.iter().map(Lit::of_expr).collect(),
            Expr::DynamicConstant(value, _) if value.is_array() => {
                let array = value.clone().into_array().ok()?;
                array.iter().map(Lit::of_dynamic).collect()
            }
            _ => None,
        }
    }
}

/// One end of a numeric range: the bound and whether it is included.
type Bound = Option<(f64, bool)>;

/// What one fact says about a path's value.
#[derive(Clone, Debug, PartialEq)]
enum Fact {
    /// One of these.
    OneOf(Vec<Lit>),
    /// None of these.
    NoneOf(Vec<Lit>),
    /// A number between `lo` and `hi`.
    Range { lo: Bound, hi: Bound },
}

/// A conjunction: facts by path. Facts the analysis could not read are left out (they
/// contradict nothing).
type Term = BTreeMap<String, Vec<Fact>>;

/// Whether the two audiences can never both hold. `None` (no `for`) is everyone.
pub(super) fn disjoint(a: Option<&rhai::AST>, b: Option<&rhai::AST>) -> bool {
    let (Some(a), Some(b)) = (a.and_then(terms), b.and_then(terms)) else {
        return false;
    };
    a.iter().all(|x| b.iter().all(|y| contradicts(x, y)))
}

/// An audience as a disjunction of conjunctions; `None` when it is more than one
/// expression (a statement could change what the other audience reads) or too large.
fn terms(ast: &rhai::AST) -> Option<Vec<Term>> {
    match ast.statements() {
        [Stmt::Expr(expr)] => dnf(expr, false),
        [Stmt::FnCall(call, pos)] => dnf(&Expr::FnCall(call.clone(), *pos), false),
        _ => None,
    }
}

/// The disjunctive normal form of `expr` (of its negation when `negated`), with a term
/// per conjunction.
fn dnf(expr: &Expr, negated: bool) -> Option<Vec<Term>> {
    let out = match expr {
        // De Morgan: a negated `&&` is an `||` of negations, and the reverse.
        Expr::And(parts, _) if !negated => product(parts, false)?,
        Expr::Or(parts, _) if negated => product(parts, true)?,
        Expr::Or(parts, _) | Expr::And(parts, _) => {
            let mut all = Vec::new();
            for part in parts.iter() {
                all.extend(dnf(part, negated)?);
            }
            all
        }
        Expr::FnCall(call, _) if call.name == "!" && call.args.len() == 1 => dnf(&call.args[0], !negated)?,
        _ => vec![atom(expr, negated).map_or_else(Term::new, |(path, fact)| Term::from([(path, vec![fact])]))],
    };
    (out.len() <= MAX_TERMS).then_some(out)
}

/// The conjunction of `parts` (each negated when `negated`), multiplied out.
fn product(parts: &[Expr], negated: bool) -> Option<Vec<Term>> {
    let mut out = vec![Term::new()];
    for part in parts {
        let alternatives = dnf(part, negated)?;
        let mut next = Vec::new();
        for term in &out {
            for alt in &alternatives {
                let mut joined = term.clone();
                for (path, facts) in alt {
                    joined.entry(path.clone()).or_default().extend(facts.iter().cloned());
                }
                next.push(joined);
            }
        }
        if next.len() > MAX_TERMS {
            return None;
        }
        out = next;
    }
    Some(out)
}

/// The fact `expr` (negated when `negated`) states about one path, if it is one the
/// analysis reads.
fn atom(expr: &Expr, negated: bool) -> Option<(String, Fact)> {
    if let Some(p) = path(expr) {
        // A bare path holds only when it is `true`; negated, only when it is `false`.
        return Some((p, Fact::OneOf(vec![Lit::Bool(!negated)])));
    }
    let Expr::FnCall(call, _) = expr else { return None };
    if call.args.len() != 2 {
        return None;
    }
    let (l, r) = (&call.args[0], &call.args[1]);
    let name = call.name.as_str();
    if name == "contains" {
        // `p in [..]` is `contains([..], p)`.
        let (items, p) = (Lit::list(l)?, path(r)?);
        return Some((
            p,
            if negated {
                Fact::NoneOf(items)
            } else {
                Fact::OneOf(items)
            },
        ));
    }
    // The path on the left: `300 <= cart.total` reads as `cart.total >= 300`.
    let (p, lit, op) = match (path(l), path(r)) {
        (Some(p), None) => (p, Lit::of_expr(r)?, name.to_string()),
        (None, Some(p)) => {
            let flipped = match name {
                "<" => ">",
                "<=" => ">=",
                ">" => "<",
                ">=" => "<=",
                other => other,
            };
            (p, Lit::of_expr(l)?, flipped.to_string())
        }
        _ => return None,
    };
    let fact = match (op.as_str(), negated) {
        ("==", false) | ("!=", true) => Fact::OneOf(vec![lit]),
        ("!=", false) | ("==", true) => Fact::NoneOf(vec![lit]),
        // A comparison that does not hold says nothing about the value's type, so a
        // negated one is not read.
        (_, true) => return None,
        (op, false) => {
            let Lit::Num(n) = lit else { return None };
            match op {
                "<" => Fact::Range {
                    lo: None,
                    hi: Some((n, false)),
                },
                "<=" => Fact::Range {
                    lo: None,
                    hi: Some((n, true)),
                },
                ">" => Fact::Range {
                    lo: Some((n, false)),
                    hi: None,
                },
                ">=" => Fact::Range {
                    lo: Some((n, true)),
                    hi: None,
                },
                _ => return None,
            }
        }
    };
    Some((p, fact))
}

/// `user.segment`, `user["segment"]`, `cart?.total`: a variable and properties under it,
/// as one string (the names joined with a NUL, which no name holds, so `a["b.c"]` and
/// `a.b.c` stay apart); `None` for anything else.
fn path(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Variable(var, _, _) => Some(var.1.to_string()),
        Expr::Property(prop, _) => Some(prop.2.to_string()),
        Expr::Dot(dot, _, _) => Some(format!("{}\0{}", path(&dot.lhs)?, path(&dot.rhs)?)),
        Expr::Index(index, _, _) => match &index.rhs {
            Expr::StringConstant(key, _) => Some(format!("{}\0{key}", path(&index.lhs)?)),
            _ => None,
        },
        _ => None,
    }
}

/// Whether two conjunctions cannot both hold: on some path their facts together leave no
/// value.
fn contradicts(a: &Term, b: &Term) -> bool {
    let paths: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    paths.into_iter().any(|p| {
        let facts: Vec<&Fact> = a.get(p).into_iter().chain(b.get(p)).flatten().collect();
        !satisfiable(&facts)
    })
}

/// Whether some value meets every fact.
fn satisfiable(facts: &[&Fact]) -> bool {
    let excluded: Vec<&Lit> = facts
        .iter()
        .filter_map(|f| if let Fact::NoneOf(l) = f { Some(l) } else { None })
        .flatten()
        .collect();
    let (mut lo, mut hi): (Bound, Bound) = (None, None);
    for fact in facts {
        if let Fact::Range { lo: l, hi: h } = fact {
            lo = tighter(lo, *l, |x, y| x > y);
            hi = tighter(hi, *h, |x, y| x < y);
        }
    }
    let ranged = facts.iter().any(|f| matches!(f, Fact::Range { .. }));
    let in_range = |n: f64| {
        lo.is_none_or(|(l, incl)| n > l || (incl && n == l)) && hi.is_none_or(|(h, incl)| n < h || (incl && n == h))
    };
    let mut candidates: Option<Vec<&Lit>> = None;
    for fact in facts {
        if let Fact::OneOf(lits) = fact {
            candidates = Some(match candidates {
                None => lits.iter().collect(),
                Some(c) => c.into_iter().filter(|x| lits.contains(x)).collect(),
            });
        }
    }
    match candidates {
        Some(c) => c.into_iter().any(|lit| {
            !excluded.contains(&lit)
                && match lit {
                    Lit::Num(n) => !ranged || in_range(*n),
                    _ => !ranged,
                }
        }),
        None if ranged => match (lo, hi) {
            (Some((l, li)), Some((h, hi_incl))) => {
                // An empty range, or a single number that is excluded.
                l < h || (l == h && li && hi_incl && !excluded.contains(&&Lit::Num(l)))
            }
            _ => true,
        },
        None => true,
    }
}

/// The tighter of two bounds, `better(x, y)` saying whether `x` is tighter than `y`; at
/// an equal bound the exclusive one is tighter.
fn tighter(a: Bound, b: Bound, better: impl Fn(f64, f64) -> bool) -> Bound {
    match (a, b) {
        (None, x) | (x, None) => x,
        (Some((x, xi)), Some((y, yi))) if x == y => Some((x, xi && yi)),
        (Some((x, xi)), Some((y, yi))) => Some(if better(x, y) { (x, xi) } else { (y, yi) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ast(source: &str) -> rhai::AST {
        crate::script::sandboxed_engine(crate::script::Limits::default())
            .compile(source)
            .unwrap()
    }

    fn apart(a: &str, b: &str) -> bool {
        let (a, b) = (ast(a), ast(b));
        let forward = disjoint(Some(&a), Some(&b));
        assert_eq!(forward, disjoint(Some(&b), Some(&a)), "disjointness is symmetric");
        forward
    }

    #[test]
    fn different_values_of_one_field_are_disjoint() {
        assert!(apart(r#"user.segment == "new""#, r#"user.segment == "vip""#));
        assert!(apart(r#"user["segment"] == "new""#, r#""vip" == user?.segment"#));
        assert!(apart(r#"user.segment == "vip""#, r#"user.segment != "vip""#));
        assert!(apart(r#"user.segment in ["vip", "svip"]"#, r#"user.segment == "new""#));
        assert!(apart(
            r#"user.segment in ["vip", "svip"]"#,
            r#"!(user.segment in ["vip", "svip"])"#
        ));
        assert!(apart("user.level == 1", "user.level == 2.0"));
        assert!(apart("user.level == 1", r#"user.level == "1""#));
    }

    #[test]
    fn a_boolean_and_its_negation_are_disjoint() {
        assert!(apart("user.is_new", "!user.is_new"));
        assert!(apart("user.is_new == true", "!user.is_new"));
        assert!(apart("user.is_new", "user.is_new == false"));
        assert!(apart("!!user.is_new", "!user.is_new"));
    }

    #[test]
    fn conjunctions_disjunctions_and_ranges() {
        assert!(apart(
            r#"user.segment == "vip" && cart?.total >= 300"#,
            r#"user.segment == "new""#
        ));
        assert!(apart(
            r#"user.segment == "vip" || user.segment == "svip""#,
            r#"user.segment == "new" && user.orders == 0"#
        ));
        assert!(apart("user.orders == 0", "user.orders >= 1"));
        assert!(apart("user.orders < 1", "1 <= user.orders"));
        assert!(apart("cart.total >= 300", "cart.total < 300"));
        assert!(apart(
            r#"!(user.segment == "vip" || user.is_new)"#,
            r#"user.segment == "vip""#
        ));
    }

    #[test]
    fn what_can_overlap_or_is_not_understood_still_overlaps() {
        // Different fields, or values that can meet.
        assert!(!apart(r#"user.segment == "vip""#, "user.is_new"));
        assert!(!apart(r#"user.segment != "new""#, r#"user.segment != "vip""#));
        assert!(!apart("cart.total >= 300", "cart.total <= 300"));
        assert!(!apart(
            r#"user.segment == "vip" || cart?.total >= 300"#,
            r#"user.segment == "new""#
        ));
        // A negated comparison also holds for a value that is not a number.
        assert!(!apart("!(cart.total >= 300)", r#"cart.total == "x""#));
        // Not read: calls, defaults, several statements.
        assert!(!apart(
            r#"orders(user.id).segment == "vip""#,
            r#"orders(user.id).segment == "new""#
        ));
        assert!(!apart(
            r#"(user.segment ?? "new") == "vip""#,
            r#"(user.segment ?? "new") == "new""#
        ));
        assert!(!apart(
            r#"let s = user.segment; s == "vip""#,
            r#"user.segment == "new""#
        ));
        // Everyone overlaps with anyone.
        let vip = ast(r#"user.segment == "vip""#);
        assert!(!disjoint(None, Some(&vip)));
    }
}
