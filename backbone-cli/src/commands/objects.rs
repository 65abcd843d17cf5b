//! Parameters kept in an object store: how an entry's are shown (as the reference their fields
//! hold, size and SHA-256, never fetched), and the store `--objects` names, for the commands
//! that delete objects.

use std::sync::Arc;

use backbone_core::objects::object_store::{self, prefix::PrefixStore};
use backbone_core::objects::{parse_names, parse_reference, ObjectStorage};
use backbone_redis::entry::OBJECTS;
use serde_json::{Map, Value};
use url::Url;

use crate::args::Global;
use crate::error::Failure;

/// How many hex digits of an object's SHA-256 people see.
const SHORT_DIGEST: usize = 12;

/// The parameters the entry document `doc` keeps in an object store (its `objects` field);
/// none when it has no such field or the field is malformed (they then show as they are).
pub fn names(doc: &Map<String, Value>) -> Vec<String> {
    let field = doc.get(OBJECTS).and_then(Value::as_str);
    field.and_then(|f| parse_names(f).ok()).unwrap_or_default()
}

/// Replaces each parameter of the entry document `doc` kept in an object store by the
/// reference its field holds: `{"object": {"size": 70000, "sha256": "…"}}` in JSON,
/// `<object 70000 bytes sha256:ab12cd34ef56…>` for people; a field that is no reference says
/// why.
pub fn describe(doc: &mut Map<String, Value>, json: bool) {
    let names = names(doc);
    let Some(Value::Object(parameters)) = doc.get_mut("parameters") else {
        return;
    };
    for name in names {
        let Some(value) = parameters.get_mut(&name) else {
            continue;
        };
        let field = match &*value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        *value = match parse_reference(field.as_bytes()) {
            Err(e) => Value::from(format!("(object: {e})")),
            Ok((size, sha256)) if json => {
                let reference =
                    super::object([("size", Value::from(size)), ("sha256", Value::from(sha256))]);
                Value::Object(super::object([("object", Value::Object(reference))]))
            }
            Ok((size, sha256)) => Value::from(format!(
                "<object {size} bytes sha256:{}…>",
                &sha256[..SHORT_DIGEST]
            )),
        };
    }
}

/// The store `--objects` (or `$BACKBONE_OBJECTS`) names, with `--objects-root`; none without
/// the option. Only `file:///absolute/dir` URLs of an existing directory are accepted: this
/// build has no cloud stores, and an in-memory one would be empty. Errors show the URL as
/// its scheme and path only, never what else it holds (credentials).
pub fn storage(g: &Global) -> Result<Option<ObjectStorage>, Failure> {
    let Some(text) = &g.objects else {
        return Ok(None);
    };
    let usage = |why: String| Failure::Usage(format!("--objects: {why}"));
    let url = Url::parse(text).map_err(|e| {
        usage(format!(
            "not a URL ({e}); give the store's directory as file:///absolute/dir"
        ))
    })?;
    let shown = format!("{}://{}", url.scheme(), url.path());
    match url.scheme() {
        "file" => {}
        "memory" => {
            return Err(usage(format!(
                "{shown}: an in-memory store is empty outside its own process; give the \
                 directory the producers' store writes under, file:///absolute/dir"
            )))
        }
        scheme => {
            return Err(usage(format!(
                "the {scheme}:// scheme is not supported: this build reads local files only \
                 (file:///absolute/dir)"
            )))
        }
    }
    let dir = match (url.host_str(), url.to_file_path()) {
        (None | Some(""), Ok(dir)) => dir,
        _ => {
            return Err(usage(format!(
                "{shown}: not a local directory (a file URL names no host: \
                 file:///absolute/dir)"
            )))
        }
    };
    if !dir.is_dir() {
        return Err(usage(format!("{shown}: no such directory")));
    }
    let (store, prefix) = object_store::parse_url(&url)
        .map_err(|e| usage(format!("{shown}: {}", scrub(&e.to_string(), text))))?;
    let store = Arc::new(PrefixStore::new(store, prefix));
    let storage = ObjectStorage::new(store)
        .root(&g.objects_root)
        .map_err(|e| Failure::Usage(format!("--objects-root: {e}")))?;
    Ok(Some(storage))
}

/// What a refusal of the library for want of an object store (`Error::Config`) becomes when
/// the command had none: the option that gives one. Other errors stay as they are.
pub fn without_store(e: backbone_core::Error, given: bool) -> Failure {
    match e {
        backbone_core::Error::Config(why) if !given && why.contains("object store") => {
            Failure::Usage(format!(
                "{why}; it stays: name the store with --objects file:///absolute/dir (and \
                 --objects-root, as the producers' root) to delete its objects"
            ))
        }
        other => Failure::Backbone(other),
    }
}

/// `message` without the whole URL `url` in it (an error naming it).
fn scrub(message: &str, url: &str) -> String {
    message.replace(url, "(the URL)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global(objects: &str) -> Global {
        use clap::Parser;
        let cli = crate::args::Cli::parse_from(["backbone", "--objects", objects, "streams"]);
        cli.global
    }

    fn refused(objects: &str) -> String {
        match storage(&global(objects)) {
            Err(Failure::Usage(why)) => why,
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("{objects} accepted"),
        }
    }

    #[test]
    fn only_existing_local_directories_are_stores() {
        let dir = std::env::temp_dir();
        let url = Url::from_directory_path(&dir).unwrap();
        assert!(storage(&global(url.as_str())).unwrap().is_some());

        let why = refused("s3://AKIA:secret@bucket/objects");
        assert!(
            why.contains("s3://") && why.contains("local files only"),
            "{why}"
        );
        let why = refused("memory:///");
        assert!(why.contains("in-memory"), "{why}");
        let why = refused("file:///no/such/backbone/dir");
        assert!(
            why.contains("file:///no/such/backbone/dir: no such directory"),
            "{why}"
        );
        for url in [
            "file://user:secret@/tmp",
            "file://user:secret@host/tmp",
            "file://secret@/tmp",
            "https://user:secret@example.com/x",
            "not a url secret",
        ] {
            let why = refused(url);
            assert!(!why.contains("secret"), "{url}: {why}");
        }
    }
}
