//! The comparison statistics against the values scipy 1.17 and the numpy
//! reference bootstrap computed for the cases in
//! `engine/tests/fixtures/compare/expected.json` (made by
//! `scripts/peers/check_compare.py --write-expected`).

use segwatch_engine::compare::bootstrap::{self, Bootstrap};
use segwatch_engine::compare::rank_tests::{TestResult, mann_whitney_u, wilcoxon};
use serde_json::Value;

fn fixture() -> Value {
    let text = include_str!("fixtures/compare/expected.json");
    serde_json::from_str(text).expect("fixture is JSON")
}

fn floats(case: &Value, key: &str) -> Vec<f64> {
    case[key]
        .as_array()
        .expect("a list")
        .iter()
        .map(|v| v.as_f64().expect("a number"))
        .collect()
}

fn cases<'a>(fixture: &'a Value, key: &str) -> &'a [Value] {
    fixture[key].as_array().expect("a list of cases")
}

fn check_test(
    key: &str,
    test: fn(&[f64], &[f64]) -> Result<TestResult, segwatch_engine::compare::CompareError>,
) {
    let fixture = fixture();
    for case in cases(&fixture, key) {
        let name = &case["name"];
        let ours = test(&floats(case, "x"), &floats(case, "y")).expect("computes");
        assert_eq!(
            ours.statistic,
            case["statistic"].as_f64().unwrap(),
            "{key} {name}"
        );
        let p = case["p_value"].as_f64().unwrap();
        assert!(
            (ours.p_value - p).abs() <= 1e-12 * p,
            "{key} {name}: p {} vs scipy {p}",
            ours.p_value
        );
    }
}

#[test]
fn compare_wilcoxon_matches_scipy() {
    check_test("wilcoxon", wilcoxon);
}

#[test]
fn compare_mann_whitney_matches_scipy() {
    check_test("mann_whitney", mann_whitney_u);
}

/// Same algorithm and random stream as the reference, so the bounds agree to
/// rounding (the reference sums in the same order; they are in fact equal).
#[test]
fn compare_bootstrap_matches_the_reference() {
    let fixture = fixture();
    for case in cases(&fixture, "bootstrap") {
        let name = &case["name"];
        let settings: Bootstrap = serde_json::from_value(case.clone()).expect("settings");
        let (a, b) = (floats(case, "a"), floats(case, "b"));
        let (lower, upper) = match case["kind"].as_str() {
            Some("paired") => {
                let i = bootstrap::paired_mean_difference(&a, &b, &settings).unwrap();
                (i.lower, Some(i.upper))
            }
            Some("unpaired") => {
                let i = bootstrap::unpaired_mean_difference(&a, &b, &settings).unwrap();
                (i.lower, Some(i.upper))
            }
            _ => (bootstrap::mean_lower_bound(&b, &settings).unwrap(), None),
        };
        let close = |ours: f64, key: &str| {
            let theirs = case[key].as_f64().unwrap();
            assert!(
                (ours - theirs).abs() <= 1e-12,
                "{name} {key}: {ours} vs {theirs}"
            );
        };
        close(lower, "lower");
        if let Some(upper) = upper {
            close(upper, "upper");
        }
    }
}
