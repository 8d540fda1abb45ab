//! `write config`: the runtime changes to servers (weights, addresses,
//! servers added and removed) written into the config file itself, keeping
//! its comments and layout (`toml_edit`), for operators who want the file to
//! say what runs. The new text must validate before it replaces the file
//! (written beside it and renamed). Drain and maintenance states are not
//! written: they are operations, kept in the state file.

use std::path::Path;

use toml_edit::{DocumentMut, InlineTable, Item, Value};

use super::state::Overrides;

/// Write the overrides into `path`; how many changes were written.
pub fn write(path: &Path, ov: &Overrides) -> Result<usize, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut n = 0;
    for o in &ov.servers {
        if o.weight.is_none() && o.addr.is_none() && o.added.is_none() && !o.deleted {
            continue;
        }
        let mut servers = servers_of(&mut doc, &o.backend)
            .ok_or_else(|| format!("backend \"{}\" has no servers list in the file", o.backend))?;
        if let Some(a) = &o.added {
            let mut t = InlineTable::new();
            t.insert("name", Value::from(o.server.as_str()));
            t.insert("address", Value::from(a.addr.to_string()));
            if a.weight != crate::config::defaults::WEIGHT {
                t.insert("weight", Value::from(i64::from(a.weight)));
            }
            if a.backup {
                t.insert("backup", Value::from(true));
            }
            servers.push(t);
            n += 1;
            continue;
        }
        if o.deleted {
            servers.remove(&o.server);
            n += 1;
            continue;
        }
        if let Some(w) = o.weight {
            servers.set(&o.server, "weight", Value::from(i64::from(w)));
            n += 1;
        }
        if let Some(a) = o.addr {
            servers.set(&o.server, "address", Value::from(a.to_string()));
            n += 1;
        }
    }
    let out = doc.to_string();
    crate::config::parse(&path.display().to_string(), &out)
        .map_err(|e| format!("the edited file would not validate, nothing written: {e}"))?;
    let mut tmp = path.to_path_buf();
    tmp.as_mut_os_string().push(".tmp");
    std::fs::write(&tmp, &out).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(&tmp, meta.permissions());
    }
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot replace {}: {e}", path.display()))?;
    Ok(n)
}

/// After a `write`: the file now holds those changes.
pub fn forget_written(ov: &mut Overrides) {
    for o in &mut ov.servers {
        o.weight = None;
        o.file_weight = None;
        o.addr = None;
        o.file_addr = None;
        o.added = None;
        o.deleted = false;
    }
    ov.prune();
}

/// A backend's `servers`, as an inline array or an array of tables.
enum Servers<'d> {
    Inline(&'d mut toml_edit::Array),
    Tables(&'d mut toml_edit::ArrayOfTables),
}

fn servers_of<'d>(doc: &'d mut DocumentMut, backend: &str) -> Option<Servers<'d>> {
    let backends = doc.get_mut("backend")?.as_array_of_tables_mut()?;
    let b = backends
        .iter_mut()
        .find(|t| t.get("name").and_then(Item::as_str) == Some(backend))?;
    match b.get_mut("servers")? {
        Item::Value(Value::Array(a)) => Some(Servers::Inline(a)),
        Item::ArrayOfTables(a) => Some(Servers::Tables(a)),
        _ => None,
    }
}

impl Servers<'_> {
    fn push(&mut self, t: InlineTable) {
        match self {
            Servers::Inline(a) => {
                // On a line of its own, indented like the one before it.
                let prefix = a
                    .iter()
                    .last()
                    .and_then(|v| v.decor().prefix())
                    .and_then(|p| p.as_str())
                    .unwrap_or("\n  ")
                    .to_string();
                a.push(t);
                if let Some(v) = a.iter_mut().last() {
                    v.decor_mut().set_prefix(prefix);
                }
            }
            Servers::Tables(a) => a.push(t.into_table()),
        }
    }

    fn remove(&mut self, name: &str) {
        match self {
            Servers::Inline(a) => a.retain(|v| {
                v.as_inline_table()
                    .and_then(|t| t.get("name"))
                    .and_then(Value::as_str)
                    != Some(name)
            }),
            Servers::Tables(a) => a.retain(|t| t.get("name").and_then(Item::as_str) != Some(name)),
        }
    }

    fn set(&mut self, name: &str, key: &str, v: Value) {
        match self {
            Servers::Inline(a) => {
                for s in a.iter_mut() {
                    if let Some(t) = s.as_inline_table_mut()
                        && t.get("name").and_then(Value::as_str) == Some(name)
                    {
                        set_inline(t, key, v.clone());
                    }
                }
            }
            Servers::Tables(a) => {
                for t in a.iter_mut() {
                    if t.get("name").and_then(Item::as_str) == Some(name) {
                        t.insert(key, Item::Value(v.clone()));
                    }
                }
            }
        }
    }
}

/// Set `key` in an inline table, spaced like `{ a = 1, b = 2 }`.
fn set_inline(t: &mut InlineTable, key: &str, mut v: Value) {
    if let Some(old) = t.get_mut(key) {
        let decor = old.decor().clone();
        *old = v;
        *old.decor_mut() = decor;
        return;
    }
    // The space before `}` sits after the last value: move it after the new one.
    if let Some((_, last)) = t.iter_mut().last() {
        last.decor_mut().set_suffix("");
    }
    v.decor_mut().set_prefix(" ");
    v.decor_mut().set_suffix(" ");
    t.insert(key, v);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::state::Added;

    #[test]
    fn changes_land_in_the_file_with_its_comments() {
        let dir = std::env::temp_dir().join(format!("fulcrum-commit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f.toml");
        std::fs::write(
            &p,
            "# the front\n[[frontend]]\nname = \"f\"\nlisten = [\"127.0.0.1:0\"]\ndefault_backend = \"b\"\n\n[[backend]]\nname = \"b\"\nservers = [\n  # first\n  { name = \"a\", address = \"127.0.0.1:1\" },\n  { name = \"c\", address = \"127.0.0.1:3\" },\n]\n",
        )
        .unwrap();
        let mut ov = Overrides::default();
        let a = ov.entry("b", "a");
        a.weight = Some(5);
        a.state = Some("drain".into());
        ov.entry("b", "c").deleted = true;
        ov.entry("b", "n").added = Some(Added {
            addr: "127.0.0.1:9".parse().unwrap(),
            weight: 2,
            backup: true,
            check: false,
        });
        assert_eq!(write(&p, &ov).unwrap(), 3);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("# the front\n"), "{text}");
        assert!(text.contains("# first"), "{text}");
        assert!(
            text.contains(
                "  # first\n  { name = \"a\", address = \"127.0.0.1:1\", weight = 5 },\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "\n  { name = \"n\", address = \"127.0.0.1:9\", weight = 2, backup = true }"
            ),
            "{text}"
        );
        let cfg = crate::config::parse("f.toml", &text).unwrap();
        let s: Vec<_> = cfg.backends[0]
            .servers
            .iter()
            .map(|s| (s.name.as_str(), s.weight, s.backup))
            .collect();
        assert_eq!(s, [("a", 5, false), ("n", 2, true)]);
        forget_written(&mut ov);
        assert_eq!(ov.servers.len(), 1, "the drain stays");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
