use super::*;

fn norm(p: &str) -> Result<String, PathError> {
    normalize(p, &PathOptions::default()).map(|c| c.into_owned())
}

fn with(p: &str, o: PathOptions) -> Result<String, PathError> {
    normalize(p, &o).map(|c| c.into_owned())
}

#[test]
fn normal_paths_are_borrowed() {
    for p in [
        "/",
        "/a",
        "/a/b/",
        "/a.b/c..d/.e/f.",
        "/a?x=/../y&z=%2F",
        "*",
        "/..a/b..",
    ] {
        let o = PathOptions::default();
        assert!(
            matches!(normalize(p, &o), Ok(Cow::Borrowed(_))),
            "{p}: {:?}",
            normalize(p, &o)
        );
    }
}

#[test]
fn walk_arounds_become_the_path_they_stand_for() {
    for (p, want) in [
        ("/%61dmin", "/admin"),
        ("/%41DMIN", "/ADMIN"),
        ("//admin", "/admin"),
        ("///admin//x", "/admin/x"),
        ("/./admin", "/admin"),
        ("/x/../admin", "/admin"),
        ("/x/y/../../admin", "/admin"),
        ("/../admin", "/admin"),
        ("/../../../admin", "/admin"),
        ("/%2e/admin", "/admin"),
        ("/%2E%2E/admin", "/admin"),
        ("/x/%2e%2e/admin", "/admin"),
        ("/x/.%2e/admin", "/admin"),
        ("/x/%2e./admin", "/admin"),
        ("/admin/.", "/admin/"),
        ("/admin/x/..", "/admin/"),
        ("/adm%69n", "/admin"),
        ("/%7eu", "/~u"),
        ("/a%2db", "/a-b"),
        ("/%5f", "/_"),
        ("/admin?q=1", "/admin?q=1"),
        ("//admin?q=/../x", "/admin?q=/../x"),
        ("/a%20b", "/a%20b"),
        ("/a%3fb", "/a%3Fb"),
        ("/%25", "/%25"),
        ("/%2561dmin", "/%2561dmin"),
        ("/a%c3%a9", "/a%C3%A9"),
        ("/.", "/"),
        ("/..", "/"),
        ("/x/..", "/"),
    ] {
        assert_eq!(norm(p).as_deref(), Ok(want), "{p}");
    }
}

#[test]
fn refused_by_default() {
    use PathError::*;
    for (p, e) in [
        ("/admin%2fx", EncodedSlash),
        ("/x%2F..%2Fadmin", EncodedSlash),
        ("/x\\..\\admin", Backslash),
        ("/%5cadmin", Backslash),
        ("/admin%00.html", EncodedControl),
        ("/a%0d%0aX: y", EncodedControl),
        ("/a%1f", EncodedControl),
        ("/a%7F", EncodedControl),
        ("/a%", InvalidEscape),
        ("/a%2", InvalidEscape),
        ("/a%zz", InvalidEscape),
        ("/admin;x=1", PathParams),
        ("/x/..;/admin", PathParams),
        ("/admin;", PathParams),
    ] {
        assert_eq!(norm(p), Err(e), "{p}");
    }
}

#[test]
fn options() {
    let keep = PathOptions {
        encoded_slash: Treat::Keep,
        backslash: Treat::Keep,
        encoded_control: Treat::Keep,
        invalid_escape: Treat::Keep,
        path_params: Treat::Keep,
        ..PathOptions::default()
    };
    assert_eq!(with("/a%2fb/../c", keep).as_deref(), Ok("/c"));
    assert_eq!(
        with("/x/a%2f..%2f/c", keep).as_deref(),
        Ok("/x/a%2F..%2F/c")
    );
    assert_eq!(with("/a\\b", keep).as_deref(), Ok("/a\\b"));
    assert_eq!(with("/a%5cb", keep).as_deref(), Ok("/a%5Cb"));
    assert_eq!(with("/a%00", keep).as_deref(), Ok("/a%00"));
    assert_eq!(with("/a%zz", keep).as_deref(), Ok("/a%zz"));
    assert_eq!(with("/a;p=1/./b", keep).as_deref(), Ok("/a;p=1/b"));
    let slash = PathOptions {
        encoded_slash: Treat::Slash,
        backslash: Treat::Slash,
        ..PathOptions::default()
    };
    assert_eq!(with("/x%2f..%2fadmin", slash).as_deref(), Ok("/admin"));
    assert_eq!(with("/x\\..\\admin", slash).as_deref(), Ok("/admin"));
    assert_eq!(with("/x%5c..%5cadmin", slash).as_deref(), Ok("/admin"));
    let no_merge = PathOptions {
        merge_slashes: false,
        ..PathOptions::default()
    };
    assert_eq!(with("/a//b/./c", no_merge).as_deref(), Ok("/a//b/c"));
    assert_eq!(with("/a//b", no_merge).as_deref(), Ok("/a//b"));
    let off = PathOptions {
        mode: PathMode::Off,
        ..PathOptions::default()
    };
    assert_eq!(
        with("/x/../%2fadmin;", off).as_deref(),
        Ok("/x/../%2fadmin;")
    );
}

/// RFC 3986 §5.2.2's merge of a relative path onto a base path, for the §5.4
/// examples (the normaliser then removes the dot segments).
fn resolve(base: &str, rel: &str) -> String {
    if rel.starts_with('/') {
        return rel.to_string();
    }
    let dir = &base[..=base.rfind('/').unwrap()];
    format!("{dir}{rel}")
}

#[test]
fn rfc3986_section_5_4_examples() {
    // Base "http://a/b/c/d;p?q": the examples whose result is a path (those
    // with an authority, a query only or a fragment say nothing about paths).
    let base = "/b/c/d;p";
    let o = PathOptions {
        path_params: Treat::Keep,
        merge_slashes: false,
        ..PathOptions::default()
    };
    let cases = [
        // §5.4.1 normal examples
        ("g", "/b/c/g"),
        ("./g", "/b/c/g"),
        ("g/", "/b/c/g/"),
        ("/g", "/g"),
        ("g;x", "/b/c/g;x"),
        (".", "/b/c/"),
        ("./", "/b/c/"),
        ("..", "/b/"),
        ("../", "/b/"),
        ("../g", "/b/g"),
        ("../..", "/"),
        ("../../", "/"),
        ("../../g", "/g"),
        // §5.4.2 abnormal examples
        ("../../../g", "/g"),
        ("../../../../g", "/g"),
        ("/./g", "/g"),
        ("/../g", "/g"),
        ("g.", "/b/c/g."),
        (".g", "/b/c/.g"),
        ("g..", "/b/c/g.."),
        ("..g", "/b/c/..g"),
        ("./../g", "/b/g"),
        ("./g/.", "/b/c/g/"),
        ("g/./h", "/b/c/g/h"),
        ("g/../h", "/b/c/h"),
        ("g;x=1/./y", "/b/c/g;x=1/y"),
        ("g;x=1/../y", "/b/c/y"),
    ];
    for (rel, want) in cases {
        let merged = resolve(base, rel);
        assert_eq!(with(&merged, o).as_deref(), Ok(want), "{rel} ({merged})");
    }
}
