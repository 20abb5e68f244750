//! The README's configuration table, rendered from the key declarations (`offpath config-table`).

use super::key::KeyDefault;
use super::keys::KEYS;

/// The configuration table for the README, rendered from every key as GitHub markdown.
///
/// The README holds it verbatim between `<!-- config-table:start -->` and `<!-- config-table:end -->`;
/// a test fails (and prints this table) when the two drift apart.
pub fn markdown_table() -> String {
    fn cell(s: &str) -> String {
        s.replace('|', "\\|").replace('<', "\\<")
    }
    fn code(s: &str) -> String {
        format!("`{}`", s.replace('|', "\\|"))
    }
    let mut out = String::from(
        "| Environment variable | YAML key | Default | Meaning |\n| --- | --- | --- | --- |\n",
    );
    for k in KEYS {
        let k = k.key();
        let envs: Vec<String> = k.envs.iter().map(|e| code(e)).collect();
        let default = match k.default {
            KeyDefault::Unset("") | KeyDefault::Value("") => "none".to_owned(),
            KeyDefault::Unset(what) | KeyDefault::Value(what) => code(what),
            KeyDefault::ByDeployment { sidecar, lambda } => {
                format!("{} ({} in Lambda)", code(sidecar), code(lambda))
            }
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            envs.join(" or "),
            code(k.yaml),
            default,
            cell(k.doc)
        ));
    }
    out
}
