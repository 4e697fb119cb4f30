//! Prints segwatch's values for the cases of a comparison fixture as JSON, for
//! `scripts/peers/check_compare.py`:
//!
//! ```sh
//! cargo run --release -p segwatch-engine --example compare_fixture -- \
//!     engine/tests/fixtures/compare/expected.json
//! ```

use segwatch_engine::compare::bootstrap::{self, Bootstrap};
use segwatch_engine::compare::rank_tests::{mann_whitney_u, wilcoxon};
use serde_json::{Value, json};

fn floats(case: &Value, key: &str) -> Result<Vec<f64>, String> {
    case[key]
        .as_array()
        .and_then(|values| values.iter().map(Value::as_f64).collect())
        .ok_or(format!("{key}: not a list of numbers"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: compare_fixture EXPECTED.json")?;
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let mut out = json!({"wilcoxon": [], "mann_whitney": [], "bootstrap": []});
    for (key, test) in [
        ("wilcoxon", wilcoxon as fn(&[f64], &[f64]) -> _),
        ("mann_whitney", mann_whitney_u),
    ] {
        for case in fixture[key].as_array().ok_or("no cases")? {
            let result = test(&floats(case, "x")?, &floats(case, "y")?)?;
            out[key]
                .as_array_mut()
                .ok_or("no list")?
                .push(json!(result));
        }
    }
    for case in fixture["bootstrap"].as_array().ok_or("no cases")? {
        let settings: Bootstrap = serde_json::from_value(case.clone())?;
        let (a, b) = (floats(case, "a")?, floats(case, "b")?);
        let bounds = match case["kind"].as_str() {
            Some("paired") => json!(bootstrap::paired_mean_difference(&a, &b, &settings)?),
            Some("unpaired") => json!(bootstrap::unpaired_mean_difference(&a, &b, &settings)?),
            _ => json!({"lower": bootstrap::mean_lower_bound(&b, &settings)?}),
        };
        out["bootstrap"]
            .as_array_mut()
            .ok_or("no list")?
            .push(bounds);
    }
    println!("{out}");
    Ok(())
}
