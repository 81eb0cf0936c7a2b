//! `bindings.localstorage` against temporary folders.

use std::sync::Arc;

use mecha_components::bindings::localstorage::LocalStorageBinding;
use mecha_core::bindings::{BindingError, OutputBinding};

use crate::{created, init, request};

async fn storage(root: &std::path::Path, extra: &[(&str, &str)]) -> Arc<dyn OutputBinding> {
    let root = root.to_str().unwrap();
    let mut md = vec![("rootPath", root)];
    md.extend_from_slice(extra);
    let c = created(LocalStorageBinding::create(init("files", &md)).await);
    assert!(c.input.is_none());
    c.output.clone().unwrap()
}

fn bad_request(r: Result<mecha_core::bindings::InvokeResponse, BindingError>) -> String {
    match r {
        Err(BindingError::BadRequest(m)) => m,
        other => panic!("expected BadRequest, got {other:?}"),
    }
}

#[tokio::test]
async fn create_get_list_delete() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("not/yet/there");
    let s = storage(&root, &[]).await;
    assert!(root.is_dir(), "rootPath is created");

    let r = s
        .invoke(request("create", b"hello", &[("fileName", "a.txt")]))
        .await
        .unwrap();
    assert_eq!(
        r.metadata.get("fileName").map(String::as_str),
        Some("a.txt")
    );
    assert_eq!(r.data.as_deref(), Some(&br#"{"fileName":"a.txt"}"#[..]));
    assert_eq!(std::fs::read(root.join("a.txt")).unwrap(), b"hello");

    // Nested names create their folders.
    s.invoke(request(
        "create",
        b"{\"k\":1}",
        &[("fileName", "sub/dir/b.json")],
    ))
    .await
    .unwrap();
    assert_eq!(
        std::fs::read(root.join("sub/dir/b.json")).unwrap(),
        b"{\"k\":1}"
    );

    // Without a name, a UUID is chosen.
    let r = s.invoke(request("create", b"x", &[])).await.unwrap();
    let name = r.metadata.get("fileName").unwrap().clone();
    assert!(uuid::Uuid::parse_str(&name).is_ok(), "{name}");

    let r = s
        .invoke(request("get", b"", &[("fileName", "a.txt")]))
        .await
        .unwrap();
    assert_eq!(r.data.as_deref(), Some(&b"hello"[..]));

    let r = s.invoke(request("list", b"", &[])).await.unwrap();
    let mut expected = vec![
        "a.txt".to_owned(),
        "sub/dir/b.json".to_owned(),
        name.clone(),
    ];
    expected.sort();
    let listed: Vec<String> = serde_json::from_slice(r.data.as_deref().unwrap()).unwrap();
    assert_eq!(listed, expected);
    let r = s
        .invoke(request("list", b"", &[("fileName", "sub")]))
        .await
        .unwrap();
    let listed: Vec<String> = serde_json::from_slice(r.data.as_deref().unwrap()).unwrap();
    assert_eq!(listed, ["sub/dir/b.json"]);

    s.invoke(request("delete", b"", &[("fileName", "a.txt")]))
        .await
        .unwrap();
    assert!(!root.join("a.txt").exists());
    let m = bad_request(
        s.invoke(request("get", b"", &[("fileName", "a.txt")]))
            .await,
    );
    assert!(m.contains("not found"), "{m}");
    let m = bad_request(
        s.invoke(request("delete", b"", &[("fileName", "a.txt")]))
            .await,
    );
    assert!(m.contains("not found"), "{m}");
    let m = bad_request(s.invoke(request("get", b"", &[])).await);
    assert!(m.contains("fileName"), "{m}");
}

#[tokio::test]
async fn json_strings_are_unquoted_and_base64_is_optional() {
    let dir = tempfile::tempdir().unwrap();
    let s = storage(dir.path(), &[]).await;
    // What the HTTP API hands over for `"data": "hello"`.
    s.invoke(request("create", b"\"hello\\n\"", &[("fileName", "q.txt")]))
        .await
        .unwrap();
    assert_eq!(std::fs::read(dir.path().join("q.txt")).unwrap(), b"hello\n");

    // Base64 only on request: "aGk=" is written as is by default.
    s.invoke(request("create", b"aGk=", &[("fileName", "plain")]))
        .await
        .unwrap();
    assert_eq!(std::fs::read(dir.path().join("plain")).unwrap(), b"aGk=");
    let md = [("fileName", "bin"), ("decodeBase64", "true")];
    s.invoke(request("create", b"\"AAEC/w==\"", &md))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("bin")).unwrap(),
        [0u8, 1, 2, 255]
    );
    let r = s
        .invoke(request(
            "get",
            b"",
            &[("fileName", "bin"), ("encodeBase64", "true")],
        ))
        .await;
    assert_eq!(r.unwrap().data.as_deref(), Some(&b"AAEC/w=="[..]));
    let m = bad_request(s.invoke(request("create", b"***", &md)).await);
    assert!(m.contains("base64"), "{m}");

    // The component-level flag, overridden per request.
    let s = storage(dir.path(), &[("decodeBase64", "true")]).await;
    s.invoke(request("create", b"aGk=", &[("fileName", "c")]))
        .await
        .unwrap();
    assert_eq!(std::fs::read(dir.path().join("c")).unwrap(), b"hi");
    let md = [("fileName", "d"), ("decodeBase64", "false")];
    s.invoke(request("create", b"aGk=", &md)).await.unwrap();
    assert_eq!(std::fs::read(dir.path().join("d")).unwrap(), b"aGk=");
}

#[tokio::test]
async fn paths_escaping_the_root_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"s3cret").unwrap();
    let s = storage(&root, &[]).await;

    for name in [
        "../outside/secret",
        "a/../../outside/secret",
        "..",
        "/etc/passwd",
    ] {
        for op in ["create", "get", "delete", "list"] {
            let m = bad_request(s.invoke(request(op, b"x", &[("fileName", name)])).await);
            assert!(m.contains("outside the root"), "{op} {name}: {m}");
        }
    }

    // A symlink to a file outside, and a symlinked folder pointing outside.
    std::os::unix::fs::symlink(outside.join("secret"), root.join("link")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("dirlink")).unwrap();
    std::os::unix::fs::symlink(outside.join("missing"), root.join("dangling")).unwrap();
    for (op, name) in [
        ("get", "link"),
        ("create", "link"),
        ("delete", "link"),
        ("get", "dirlink/secret"),
        ("create", "dirlink/new"),
        ("create", "dirlink/deeper/new"),
        ("list", "dirlink"),
        ("create", "dangling"),
    ] {
        let r = s.invoke(request(op, b"pwned", &[("fileName", name)])).await;
        let m = bad_request(r);
        assert!(
            m.contains("outside the root") || m.contains("resolved"),
            "{op} {name}: {m}"
        );
    }
    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"s3cret");
    assert!(!outside.join("new").exists() && !outside.join("deeper").exists());
    assert!(!outside.join("missing").exists());

    // A symlink that stays inside the root is fine, and listing does not follow symlinks.
    s.invoke(request("create", b"in", &[("fileName", "real")]))
        .await
        .unwrap();
    std::os::unix::fs::symlink(root.join("real"), root.join("alias")).unwrap();
    let r = s
        .invoke(request("get", b"", &[("fileName", "alias")]))
        .await
        .unwrap();
    assert_eq!(r.data.as_deref(), Some(&b"in"[..]));
    let r = s.invoke(request("list", b"", &[])).await.unwrap();
    let listed: Vec<String> = serde_json::from_slice(r.data.as_deref().unwrap()).unwrap();
    assert!(!listed.iter().any(|f| f.contains("secret")), "{listed:?}");
    // Deleting a link removes the link, not its target.
    s.invoke(request("delete", b"", &[("fileName", "alias")]))
        .await
        .unwrap();
    assert!(root.join("real").exists());
    assert!(std::fs::symlink_metadata(root.join("alias")).is_err());
}

#[tokio::test]
async fn unknown_operations_and_bad_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let s = storage(dir.path(), &[]).await;
    let err = s.invoke(request("exec", b"", &[])).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("exec") && msg.contains("create, get, list, delete"),
        "{msg}"
    );
    let m = bad_request(
        s.invoke(request(
            "get",
            b"",
            &[("fileName", "x"), ("encodeBase64", "maybe")],
        ))
        .await,
    );
    assert!(m.contains("encodeBase64"), "{m}");

    let Err(e) = LocalStorageBinding::create(init("files", &[])).await else {
        panic!("rootPath is required")
    };
    assert!(e.to_string().contains("rootPath"), "{e}");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let Err(e) =
        LocalStorageBinding::create(init("f", &[("rootPath", file.to_str().unwrap())])).await
    else {
        panic!("a file is no root folder")
    };
    assert!(e.to_string().contains("rootPath"), "{e}");
}
