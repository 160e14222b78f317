//! The config document of one namespace: a tree of branches and leaves, addressed by dotted
//! paths. Pure data: no I/O, no clocks; sealing goes through the [`Sealer`] the caller passes.
//!
//! Semantics (docs/compatibility.md §8):
//!
//! - **Paths** are dot-separated, non-empty segments (`a.b.c`). The empty path is the whole
//!   document. A path may not exceed [`MAX_PATH_BYTES`] bytes or [`MAX_DEPTH`] segments.
//! - **Set** of a JSON object merges it leaf by leaf into the subtree at the path (creating it as
//!   needed); every other value (string, number, bool, array, null) is one leaf that replaces
//!   whatever was at the path. So a scalar over a subtree replaces the subtree, and an object over
//!   a leaf replaces the leaf with a subtree. A path that runs through a leaf turns that leaf into a
//!   branch. The empty path accepts only an object, merged into the root.
//! - **Get** returns the subtree at the path with leaves unwrapped, or JSON `null` when nothing is
//!   there (including a path that runs through a leaf). The empty path returns the whole document.
//! - **Delete** removes the leaf or subtree at the path; removing what is not there is not an
//!   error. Parents are kept, even when they become empty (`{}`). The empty path is rejected: the
//!   whole document is never removed by accident.
//! - **Secrets**: with a [`Sealer`], Set seals every leaf it writes. Get masks each sealed leaf as
//!   the JSON string `"[secret]"` (whatever its type) unless given a [`Sealer`] to open it.
//!
//! Keys inside object values follow the segment rules (non-empty, no `.`), so every node stays
//! addressable by a path; the full path to every leaf is bounded like a path.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::str::FromStr;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use crate::secret::SecretError;

/// Longest path accepted, in bytes, counting the dots. Also bounds the full path of every leaf an
/// object value creates.
pub const MAX_PATH_BYTES: usize = 512;

/// Deepest node a document may hold: path segments plus the object/array nesting of the value.
pub const MAX_DEPTH: usize = 32;

/// Largest value one Set accepts, measured as compact JSON text.
pub const MAX_VALUE_BYTES: usize = 256 * 1024;

/// Largest stored document of one namespace (the wrapped-leaf JSON, secrets sealed).
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// What a secret leaf reads as when it is not revealed.
pub const SECRET_MASK: &str = "[secret]";

/// Why a path, value or stored document was rejected.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// The path is malformed or too long; the caller should fix the path.
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },
    /// The value cannot be stored at the path; the caller should fix the value.
    #[error("invalid value for path {path:?}: {reason}")]
    InvalidValue { path: String, reason: String },
    /// The value is bigger than [`MAX_VALUE_BYTES`].
    #[error("the value is larger than the limit of {max} bytes")]
    ValueTooLarge { max: usize },
    /// The document would grow beyond [`MAX_DOCUMENT_BYTES`].
    #[error(
        "the config document would be {size} bytes, over the limit of {max} bytes: delete unused keys first"
    )]
    DocumentTooLarge { size: usize, max: usize },
    /// A secret could not be sealed or opened.
    #[error("secret at {path:?}: {source}")]
    Secret { path: String, source: SecretError },
    /// The stored bytes are not a document in the wrapped-leaf format.
    #[error("the stored config document is corrupt: {0}")]
    Corrupt(String),
}

impl DocumentError {
    /// The answer to deleting the empty path: the whole document is never deleted by accident.
    pub fn root_delete() -> Self {
        DocumentError::InvalidPath {
            path: String::new(),
            reason: "the whole document cannot be deleted; name the key to delete".to_string(),
        }
    }
}

/// Seals and opens secret leaves. [`crate::SecretKey`] is the real one; tests may fake it.
pub trait Sealer: Send + Sync {
    /// Seals `plaintext` into printable text, freshly randomised on every call.
    fn seal(&self, plaintext: &[u8]) -> Result<String, SecretError>;
    /// Opens what [`Sealer::seal`] produced, failing if it was sealed by another key or altered.
    fn open(&self, sealed: &str) -> Result<Vec<u8>, SecretError>;
}

/// A parsed, bounded dotted path. The empty path ([`Path::root`]) is the whole document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Path {
    segments: Vec<String>,
}

impl Path {
    /// The whole document.
    pub fn root() -> Self {
        Self::default()
    }

    /// Parses `a.b.c`; the empty string is the root. Rejects empty segments (`a..b`, `.a`, `a.`)
    /// and paths over [`MAX_PATH_BYTES`] bytes or [`MAX_DEPTH`] segments.
    pub fn parse(text: &str) -> Result<Self, DocumentError> {
        let invalid = |reason: String| DocumentError::InvalidPath { path: truncated(text), reason };
        if text.is_empty() {
            return Ok(Self::root());
        }
        if text.len() > MAX_PATH_BYTES {
            return Err(invalid(format!("longer than {MAX_PATH_BYTES} bytes")));
        }
        let segments: Vec<String> = text.split('.').map(str::to_string).collect();
        if segments.iter().any(String::is_empty) {
            return Err(invalid("empty segment: use dot-separated names like \"a.b.c\"".to_string()));
        }
        if segments.len() > MAX_DEPTH {
            return Err(invalid(format!("deeper than {MAX_DEPTH} segments")));
        }
        Ok(Self { segments })
    }

    /// Whether this is the whole document.
    pub fn is_root(&self) -> bool {
        self.segments.is_empty()
    }

    /// The segments, outermost first.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// Whether a change at `self` can change the value at `other` or the other way round: one is
    /// the other or an ancestor of it, segment-wise (`a.b` overlaps `a`, `a.b.c`, not `a.bc`).
    pub fn overlaps(&self, other: &Path) -> bool {
        self.segments.iter().zip(&other.segments).all(|(a, b)| a == b)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.segments.join("."))
    }
}

impl FromStr for Path {
    type Err = DocumentError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// A leaf's content: a plain JSON value (never an object written by Set) or a sealed one.
#[derive(Debug, Clone, PartialEq)]
enum Leaf {
    Plain(Value),
    /// base64(nonce || ciphertext) of the value's JSON text, as produced by a [`Sealer`].
    Sealed(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Branch(BTreeMap<String, Node>),
    Leaf(Leaf),
}

/// The config document of one namespace. See the module docs for the semantics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Document {
    root: BTreeMap<String, Node>,
}

impl Document {
    /// An empty document (`{}`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the document has no keys.
    pub fn is_empty(&self) -> bool {
        self.root.is_empty()
    }

    /// Parses a document stored in the wrapped-leaf format (see the crate docs).
    pub fn decode(bytes: &[u8]) -> Result<Self, DocumentError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|err| DocumentError::Corrupt(format!("not JSON: {err}")))?;
        match decode_node(value, &mut String::new())? {
            Node::Branch(root) => Ok(Self { root }),
            Node::Leaf(_) => Err(DocumentError::Corrupt("the root is a leaf, not an object".to_string())),
        }
    }

    /// The stored form, in the wrapped-leaf format, without a size check (see
    /// [`Document::encode_bounded`]).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&WrappedBranch(&self.root))
            .expect("serialising string-keyed maps of JSON values cannot fail")
    }

    /// The stored form, or [`DocumentError::DocumentTooLarge`] if it exceeds
    /// [`MAX_DOCUMENT_BYTES`].
    pub fn encode_bounded(&self) -> Result<Vec<u8>, DocumentError> {
        let bytes = self.encode();
        if bytes.len() > MAX_DOCUMENT_BYTES {
            return Err(DocumentError::DocumentTooLarge { size: bytes.len(), max: MAX_DOCUMENT_BYTES });
        }
        Ok(bytes)
    }

    /// The unwrapped value at `path` (`null` when absent). Secret leaves read as
    /// [`SECRET_MASK`] unless `reveal` is given to open them.
    pub fn get(&self, path: &Path, reveal: Option<&dyn Sealer>) -> Result<Value, DocumentError> {
        let mut node_path = String::new();
        let Some((last, parents)) = path.segments.split_last() else {
            return unwrap_branch(&self.root, reveal, &mut node_path);
        };
        let mut branch = &self.root;
        for segment in parents {
            match branch.get(segment) {
                Some(Node::Branch(children)) => branch = children,
                Some(Node::Leaf(_)) | None => return Ok(Value::Null),
            }
        }
        match branch.get(last) {
            None => Ok(Value::Null),
            Some(node) => {
                node_path.push_str(&path.to_string());
                unwrap_node(node, reveal, &mut node_path)
            }
        }
    }

    /// Sets `value` at `path` with the merge rules of the module docs. With `seal`, every leaf
    /// written is sealed (an object's leaves one by one). On error the document is unchanged.
    pub fn set(
        &mut self,
        path: &Path,
        value: &Value,
        seal: Option<&dyn Sealer>,
    ) -> Result<(), DocumentError> {
        let path_text = path.to_string();
        let invalid = |reason: String| DocumentError::InvalidValue { path: path_text.clone(), reason };

        // Bounds first, without recursion, so a hostile value cannot exhaust the stack here.
        if path.segments.len() + nesting(value, MAX_DEPTH + 1) > MAX_DEPTH {
            return Err(invalid(format!(
                "the document would be deeper than {MAX_DEPTH} levels (path segments plus nesting)"
            )));
        }
        if !fits_in(value, MAX_VALUE_BYTES) {
            return Err(DocumentError::ValueTooLarge { max: MAX_VALUE_BYTES });
        }

        // Build the whole new subtree (validating keys, sealing leaves) before touching `self`.
        let mut node_path = path_text.clone();
        let incoming = build(value, seal, &mut node_path)?;

        let Some((last, parents)) = path.segments.split_last() else {
            return match incoming {
                Node::Branch(children) => {
                    merge_into_branch(&mut self.root, children);
                    Ok(())
                }
                Node::Leaf(_) => Err(invalid(
                    "the whole document can only be set to an object; name a path to set a single value"
                        .to_string(),
                )),
            };
        };
        let mut branch = &mut self.root;
        for segment in parents {
            let child = branch.entry(segment.clone()).or_insert_with(|| Node::Branch(BTreeMap::new()));
            if let Node::Leaf(_) = child {
                // The path runs through a leaf: the leaf gives way to a branch.
                *child = Node::Branch(BTreeMap::new());
            }
            branch = match child {
                Node::Branch(children) => children,
                Node::Leaf(_) => unreachable!("a leaf on the path was just replaced by a branch"),
            };
        }
        merge_child(branch, last.clone(), incoming);
        Ok(())
    }

    /// Removes the leaf or subtree at `path`; returns whether anything was there. The root
    /// cannot be deleted.
    pub fn delete(&mut self, path: &Path) -> Result<bool, DocumentError> {
        let Some((last, parents)) = path.segments.split_last() else {
            return Err(DocumentError::root_delete());
        };
        let mut branch = &mut self.root;
        for segment in parents {
            match branch.get_mut(segment) {
                Some(Node::Branch(children)) => branch = children,
                Some(Node::Leaf(_)) | None => return Ok(false),
            }
        }
        Ok(branch.remove(last).is_some())
    }
}

/// A path in an error message, cut short so a huge input does not echo back whole.
fn truncated(text: &str) -> String {
    const SHOWN: usize = 64;
    if text.len() <= SHOWN {
        return text.to_string();
    }
    let mut end = SHOWN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// How deeply `value` nests objects/arrays (a scalar is 0, `{"a":1}` is 1), computed without
/// recursion; stops counting once `cap` is reached.
fn nesting(value: &Value, cap: usize) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((value, depth)) = stack.pop() {
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|child| (child, depth + 1))),
            Value::Object(fields) => stack.extend(fields.values().map(|child| (child, depth + 1))),
            _ => continue,
        }
        deepest = deepest.max(depth + 1);
        if deepest >= cap {
            return deepest;
        }
    }
    deepest
}

/// Whether the compact JSON text of `value` is at most `limit` bytes, stopping early when not.
fn fits_in(value: &Value, limit: usize) -> bool {
    struct Counter {
        written: usize,
        limit: usize,
    }
    impl io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.written += bytes.len();
            if self.written > self.limit {
                return Err(io::Error::other("over the limit"));
            }
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    serde_json::to_writer(Counter { written: 0, limit }, value).is_ok()
}

/// Checks an object key of a value: it must be usable as a path segment.
fn check_key(key: &str, parent: &str) -> Result<(), DocumentError> {
    if key.is_empty() || key.contains('.') {
        return Err(DocumentError::InvalidValue {
            path: parent.to_string(),
            reason: format!(
                "object key {:?} cannot be addressed by a dotted path: keys must be non-empty and contain no '.'",
                truncated(key)
            ),
        });
    }
    Ok(())
}

/// Turns a value into the subtree Set writes, sealing leaves when asked. `node_path` is the path
/// of `value` (restored on return), used for the leaf path bound and error messages.
fn build(value: &Value, seal: Option<&dyn Sealer>, node_path: &mut String) -> Result<Node, DocumentError> {
    let Value::Object(fields) = value else {
        let leaf = match seal {
            None => Leaf::Plain(value.clone()),
            Some(sealer) => Leaf::Sealed(
                sealer
                    .seal(value.to_string().as_bytes())
                    .map_err(|source| DocumentError::Secret { path: node_path.clone(), source })?,
            ),
        };
        return Ok(Node::Leaf(leaf));
    };
    let mut children = BTreeMap::new();
    for (key, child) in fields {
        check_key(key, node_path)?;
        let restore = node_path.len();
        if !node_path.is_empty() {
            node_path.push('.');
        }
        node_path.push_str(key);
        if node_path.len() > MAX_PATH_BYTES {
            let err = DocumentError::InvalidValue {
                path: truncated(node_path),
                reason: format!("the path to this key is longer than {MAX_PATH_BYTES} bytes"),
            };
            node_path.truncate(restore);
            return Err(err);
        }
        let built = build(child, seal, node_path);
        node_path.truncate(restore);
        children.insert(key.clone(), built?);
    }
    Ok(Node::Branch(children))
}

/// Merges `incoming` into the child `key` of `branch` (docs/compatibility.md §8 merge rules).
fn merge_child(branch: &mut BTreeMap<String, Node>, key: String, incoming: Node) {
    match (branch.get_mut(&key), incoming) {
        (Some(Node::Branch(existing)), Node::Branch(children)) => merge_into_branch(existing, children),
        (_, incoming) => {
            branch.insert(key, incoming);
        }
    }
}

fn merge_into_branch(existing: &mut BTreeMap<String, Node>, children: BTreeMap<String, Node>) {
    for (key, child) in children {
        merge_child(existing, key, child);
    }
}

fn unwrap_node(
    node: &Node,
    reveal: Option<&dyn Sealer>,
    node_path: &mut String,
) -> Result<Value, DocumentError> {
    match node {
        Node::Branch(children) => unwrap_branch(children, reveal, node_path),
        Node::Leaf(Leaf::Plain(value)) => Ok(value.clone()),
        Node::Leaf(Leaf::Sealed(sealed)) => {
            let Some(sealer) = reveal else {
                return Ok(Value::String(SECRET_MASK.to_string()));
            };
            let secret_error = |source| DocumentError::Secret { path: node_path.clone(), source };
            let plaintext = sealer.open(sealed).map_err(secret_error)?;
            serde_json::from_slice(&plaintext).map_err(|_| secret_error(SecretError::NotJson))
        }
    }
}

fn unwrap_branch(
    children: &BTreeMap<String, Node>,
    reveal: Option<&dyn Sealer>,
    node_path: &mut String,
) -> Result<Value, DocumentError> {
    let mut object = serde_json::Map::new();
    for (key, child) in children {
        let restore = node_path.len();
        if !node_path.is_empty() {
            node_path.push('.');
        }
        node_path.push_str(key);
        let value = unwrap_node(child, reveal, node_path);
        node_path.truncate(restore);
        object.insert(key.clone(), value?);
    }
    Ok(Value::Object(object))
}

/// Reads one stored node. Nesting is bounded by `serde_json`'s recursion limit on parsing.
fn decode_node(value: Value, node_path: &mut String) -> Result<Node, DocumentError> {
    let corrupt = |node_path: &str, what: &str| DocumentError::Corrupt(format!("at {node_path:?}: {what}"));
    let Value::Object(mut fields) = value else {
        return Err(corrupt(node_path, "expected an object"));
    };
    if fields.get("leaf") == Some(&Value::Bool(true)) {
        let Some(Value::String(text)) = fields.remove("value") else {
            return Err(corrupt(node_path, "a leaf without a string value"));
        };
        if fields.get("secret") == Some(&Value::Bool(true)) {
            return Ok(Node::Leaf(Leaf::Sealed(text)));
        }
        let value =
            serde_json::from_str(&text).map_err(|_| corrupt(node_path, "a leaf value that is not JSON"))?;
        return Ok(Node::Leaf(Leaf::Plain(value)));
    }
    let mut children = BTreeMap::new();
    for (key, child) in fields {
        let restore = node_path.len();
        if !node_path.is_empty() {
            node_path.push('.');
        }
        node_path.push_str(&key);
        let decoded = decode_node(child, node_path);
        node_path.truncate(restore);
        children.insert(key, decoded?);
    }
    Ok(Node::Branch(children))
}

/// Serialises a branch in the wrapped-leaf format without building an intermediate `Value`.
struct WrappedBranch<'a>(&'a BTreeMap<String, Node>);

impl Serialize for WrappedBranch<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0)
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Branch(children) => serializer.collect_map(children),
            Node::Leaf(Leaf::Plain(value)) => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("value", &value.to_string())?;
                map.serialize_entry("leaf", &true)?;
                map.end()
            }
            Node::Leaf(Leaf::Sealed(sealed)) => {
                let mut map = serializer.serialize_map(Some(3))?;
                map.serialize_entry("value", sealed)?;
                map.serialize_entry("leaf", &true)?;
                map.serialize_entry("secret", &true)?;
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A reversible stand-in for the real cipher: "sealed:" + hex, so tests can see through it.
    struct FakeSealer;

    impl Sealer for FakeSealer {
        fn seal(&self, plaintext: &[u8]) -> Result<String, SecretError> {
            Ok(format!("sealed:{}", hex::encode(plaintext)))
        }
        fn open(&self, sealed: &str) -> Result<Vec<u8>, SecretError> {
            let sealed = sealed.strip_prefix("sealed:").ok_or(SecretError::Rejected)?;
            hex::decode(sealed).map_err(|_| SecretError::Malformed)
        }
    }

    fn path(text: &str) -> Path {
        Path::parse(text).unwrap()
    }

    fn set(doc: &mut Document, at: &str, value: Value) {
        doc.set(&path(at), &value, None).unwrap();
    }

    fn get(doc: &Document, at: &str) -> Value {
        doc.get(&path(at), None).unwrap()
    }

    #[test]
    fn paths_parse_and_are_bounded() {
        assert!(Path::parse("").unwrap().is_root());
        assert_eq!(path("a.b.c").segments(), ["a", "b", "c"]);
        assert_eq!(path("a.b.c").to_string(), "a.b.c");
        assert_eq!(path("with space.ünï-cödé_9").segments().len(), 2);
        for bad in [".", "a.", ".a", "a..b", ".."] {
            let err = Path::parse(bad).unwrap_err();
            assert!(matches!(err, DocumentError::InvalidPath { .. }), "{bad:?}");
            assert!(err.to_string().contains("empty segment"), "{err}");
        }

        let deepest = vec!["k"; MAX_DEPTH].join(".");
        assert_eq!(path(&deepest).segments().len(), MAX_DEPTH);
        let too_deep = vec!["k"; MAX_DEPTH + 1].join(".");
        assert!(Path::parse(&too_deep).unwrap_err().to_string().contains("deeper than 32 segments"));

        let longest = "x".repeat(MAX_PATH_BYTES);
        assert!(Path::parse(&longest).is_ok());
        let err = Path::parse(&"é".repeat(MAX_PATH_BYTES)).unwrap_err().to_string();
        assert!(err.contains("longer than 512 bytes"), "{err}");
        assert!(err.len() < 200, "huge inputs are not echoed whole: {err}");
    }

    #[test]
    fn overlapping_paths_are_ancestors_or_descendants_segment_wise() {
        let a_b = path("a.b");
        for overlapping in ["", "a", "a.b", "a.b.c"] {
            assert!(a_b.overlaps(&path(overlapping)), "{overlapping}");
            assert!(path(overlapping).overlaps(&a_b), "{overlapping}");
        }
        for unrelated in ["b", "a.c", "a.bc", "ab"] {
            assert!(!a_b.overlaps(&path(unrelated)), "{unrelated}");
        }
    }

    #[test]
    fn objects_merge_leaf_by_leaf_as_in_the_reference() {
        let mut doc = Document::new();
        set(&mut doc, "x", json!({"a": 1}));
        set(&mut doc, "x", json!({"b": 2}));
        assert_eq!(get(&doc, "x"), json!({"a": 1, "b": 2}));

        let mut doc = Document::new();
        set(&mut doc, "", json!({"a": 1, "b": {"b1": 2}, "c": 3}));
        set(&mut doc, "", json!({"d": 4, "b": {"b2": 2.2}}));
        assert_eq!(get(&doc, ""), json!({"a": 1, "b": {"b1": 2, "b2": 2.2}, "c": 3, "d": 4}));
        assert_eq!(get(&doc, "b.b2"), json!(2.2));
    }

    #[test]
    fn scalars_and_arrays_replace_and_objects_replace_leaves() {
        let mut doc = Document::new();
        set(&mut doc, "a.b", json!({"c": 1, "d": {"e": true}}));

        set(&mut doc, "a.b", json!("flat"));
        assert_eq!(get(&doc, "a"), json!({"b": "flat"}), "a scalar over a subtree replaces it");

        set(&mut doc, "a.b", json!({"c": 2}));
        assert_eq!(get(&doc, "a.b"), json!({"c": 2}), "an object over a scalar replaces it");

        set(&mut doc, "a.b", json!([1, {"x": 2}, [3]]));
        assert_eq!(get(&doc, "a.b"), json!([1, {"x": 2}, [3]]), "arrays are single leaves");
        assert_eq!(get(&doc, "a.b.x"), Value::Null, "no addressing into arrays");
        set(&mut doc, "a.b", json!([]));
        assert_eq!(get(&doc, "a.b"), json!([]), "arrays replace, never merge");

        set(&mut doc, "a.b.c.d", json!(5));
        assert_eq!(get(&doc, "a"), json!({"b": {"c": {"d": 5}}}), "a path through a leaf makes a branch");

        set(&mut doc, "a.b", json!({}));
        assert_eq!(get(&doc, "a.b"), json!({"c": {"d": 5}}), "an empty object merges nothing");
        set(&mut doc, "n", json!({}));
        assert_eq!(get(&doc, "n"), json!({}), "but creates an empty subtree where nothing was");

        set(&mut doc, "a.b.c", Value::Null);
        assert_eq!(get(&doc, "a.b"), json!({"c": null}), "null is a leaf like any scalar");

        for scalar in [json!(0), json!(-1.5e300), json!(false), json!(""), json!(u64::MAX), json!(i64::MIN)] {
            set(&mut doc, "t", scalar.clone());
            assert_eq!(get(&doc, "t"), scalar, "types survive");
            let reread = Document::decode(&doc.encode()).unwrap();
            assert_eq!(get(&reread, "t"), scalar, "types survive storage");
        }
    }

    #[test]
    fn get_of_missing_paths_is_null() {
        let mut doc = Document::new();
        assert_eq!(get(&doc, ""), json!({}));
        assert_eq!(get(&doc, "nope"), Value::Null);
        set(&mut doc, "a.b", json!("v"));
        assert_eq!(get(&doc, "a.c"), Value::Null);
        assert_eq!(get(&doc, "a.b.c"), Value::Null, "a path through a leaf");
        assert_eq!(get(&doc, "a.b.c.d"), Value::Null);
        assert_eq!(get(&doc, "z.y.x"), Value::Null);
    }

    #[test]
    fn the_root_takes_only_objects() {
        let mut doc = Document::new();
        set(&mut doc, "", json!({"a": 1}));
        for scalar in [json!(1), json!("s"), json!([1]), Value::Null] {
            let err = doc.set(&Path::root(), &scalar, None).unwrap_err();
            assert!(matches!(err, DocumentError::InvalidValue { .. }), "{err}");
            assert!(err.to_string().contains("only be set to an object"), "{err}");
        }
        assert_eq!(get(&doc, ""), json!({"a": 1}));
    }

    #[test]
    fn delete_removes_leaves_and_subtrees_and_keeps_parents() {
        let mut doc = Document::new();
        set(&mut doc, "", json!({"a": {"b": {"c": 1, "d": 2}, "e": 3}, "f": 4}));

        assert!(doc.delete(&path("a.b.c")).unwrap());
        assert_eq!(get(&doc, "a.b"), json!({"d": 2}));
        assert!(doc.delete(&path("a.b")).unwrap());
        assert_eq!(get(&doc, "a"), json!({"e": 3}));
        assert!(doc.delete(&path("a.e")).unwrap());
        assert_eq!(get(&doc, "a"), json!({}), "an emptied parent stays, as {{}}");

        assert!(!doc.delete(&path("a.e")).unwrap(), "deleting what is absent is fine");
        assert!(!doc.delete(&path("f.g")).unwrap(), "a path through a leaf deletes nothing");
        assert!(!doc.delete(&path("x.y.z")).unwrap());
        assert_eq!(get(&doc, ""), json!({"a": {}, "f": 4}));

        let err = doc.delete(&Path::root()).unwrap_err();
        assert!(err.to_string().contains("whole document cannot be deleted"), "{err}");
        assert_eq!(get(&doc, "f"), json!(4));
    }

    #[test]
    fn secrets_are_masked_unless_revealed() {
        let mut doc = Document::new();
        set(&mut doc, "key.subkey", json!("val1"));
        for (at, value) in [
            ("key.pin", json!(42)),
            ("key.flag", json!(true)),
            ("key.list", json!([1, 2])),
            ("key.mail", json!("Micro Team <support@m3o.com>")),
        ] {
            doc.set(&path(at), &value, Some(&FakeSealer)).unwrap();
            assert_eq!(
                doc.get(&path(at), None).unwrap(),
                json!(SECRET_MASK),
                "{at} masked whatever its type"
            );
            assert_eq!(doc.get(&path(at), Some(&FakeSealer)).unwrap(), value, "{at} revealed");
        }
        assert_eq!(
            doc.get(&path("key"), None).unwrap(),
            json!({"subkey": "val1", "pin": "[secret]", "flag": "[secret]", "list": "[secret]", "mail": "[secret]"})
        );

        // A secret object is sealed leaf by leaf and merges like any object.
        doc.set(&path("db"), &json!({"user": "u", "password": "p"}), Some(&FakeSealer)).unwrap();
        set(&mut doc, "db.host", json!("h"));
        assert_eq!(
            doc.get(&path("db"), None).unwrap(),
            json!({"host": "h", "password": "[secret]", "user": "[secret]"})
        );
        assert_eq!(
            doc.get(&path("db"), Some(&FakeSealer)).unwrap(),
            json!({"host": "h", "password": "p", "user": "u"})
        );

        // Setting a plain value over a secret makes it plain again.
        set(&mut doc, "key.pin", json!(7));
        assert_eq!(get(&doc, "key.pin"), json!(7));
    }

    #[test]
    fn secrets_that_cannot_be_opened_are_errors_naming_the_leaf() {
        struct Refuses;
        impl Sealer for Refuses {
            fn seal(&self, _: &[u8]) -> Result<String, SecretError> {
                Err(SecretError::Rejected)
            }
            fn open(&self, _: &str) -> Result<Vec<u8>, SecretError> {
                Err(SecretError::Rejected)
            }
        }
        let mut doc = Document::new();
        doc.set(&path("a.b"), &json!("s"), Some(&FakeSealer)).unwrap();
        let err = doc.get(&path("a"), Some(&Refuses)).unwrap_err();
        assert!(matches!(&err, DocumentError::Secret { path, .. } if path == "a.b"), "{err:?}");
        assert_eq!(doc.get(&path("a"), None).unwrap(), json!({"b": "[secret]"}), "masking needs no key");

        let before = doc.clone();
        let err = doc.set(&path("a.c"), &json!({"x": 1}), Some(&Refuses)).unwrap_err();
        assert!(matches!(&err, DocumentError::Secret { path, .. } if path == "a.c.x"), "{err:?}");
        assert_eq!(doc, before, "a failed seal changes nothing");
    }

    #[test]
    fn stored_format_is_the_wrapped_leaf_format() {
        let mut doc = Document::new();
        set(&mut doc, "key.subkey", json!("val1"));
        set(&mut doc, "key.n", json!(1.5));
        doc.set(&path("key.pin"), &json!(42), Some(&FakeSealer)).unwrap();
        let stored: Value = serde_json::from_slice(&doc.encode()).unwrap();
        assert_eq!(
            stored,
            json!({"key": {
                "subkey": {"value": "\"val1\"", "leaf": true},
                "n": {"value": "1.5", "leaf": true},
                "pin": {"value": "sealed:3432", "leaf": true, "secret": true},
            }})
        );
        assert_eq!(Document::decode(&doc.encode()).unwrap(), doc);

        // User keys named like the markers cannot be mistaken for a leaf.
        let tricky = json!({"value": "x", "leaf": true, "secret": true});
        let mut doc = Document::new();
        set(&mut doc, "t", tricky.clone());
        let reread = Document::decode(&doc.encode()).unwrap();
        assert_eq!(get(&reread, "t"), tricky);
        assert_eq!(get(&reread, "t.leaf"), json!(true));

        assert_eq!(Document::decode(b"{}").unwrap(), Document::new());
    }

    #[test]
    fn corrupt_stored_documents_are_rejected_not_panicked_on() {
        for bad in [
            &b"not json"[..],
            b"[]",
            b"1",
            br#"{"value":"1","leaf":true}"#,
            br#"{"a":1}"#,
            br#"{"a":{"leaf":true}}"#,
            br#"{"a":{"leaf":true,"value":5}}"#,
            br#"{"a":{"leaf":true,"value":"{not json"}}"#,
        ] {
            let err = Document::decode(bad).unwrap_err();
            assert!(matches!(err, DocumentError::Corrupt(_)), "{}: {err}", String::from_utf8_lossy(bad));
        }
        let deep = format!("{}{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
        assert!(matches!(Document::decode(deep.as_bytes()), Err(DocumentError::Corrupt(_))));
    }

    #[test]
    fn object_keys_must_be_addressable() {
        let mut doc = Document::new();
        set(&mut doc, "keep", json!(1));
        let before = doc.clone();
        for bad in [json!({"a.b": 1}), json!({"": 1}), json!({"ok": {"x.y": 2}})] {
            let err = doc.set(&path("k"), &bad, None).unwrap_err();
            assert!(matches!(err, DocumentError::InvalidValue { .. }), "{err}");
            assert!(err.to_string().contains("cannot be addressed by a dotted path"), "{err}");
        }
        let long_key = "k".repeat(MAX_PATH_BYTES);
        let err = doc.set(&path("k"), &json!({ long_key: 1 }), None).unwrap_err();
        assert!(err.to_string().contains("longer than 512 bytes"), "{err}");
        assert_eq!(doc, before, "failed sets change nothing");
    }

    #[test]
    fn depth_and_size_are_bounded() {
        let mut doc = Document::new();

        let mut nested = json!(1);
        for _ in 0..MAX_DEPTH - 1 {
            nested = json!({ "n": nested });
        }
        doc.set(&path("top"), &nested, None).unwrap();
        let err = doc.set(&path("top.again"), &nested, None).unwrap_err();
        assert!(err.to_string().contains("deeper than 32 levels"), "{err}");

        let mut arrays = json!(1);
        for _ in 0..100_000 {
            arrays = Value::Array(vec![arrays]);
        }
        let err = doc.set(&path("arr"), &arrays, None).unwrap_err();
        assert!(matches!(err, DocumentError::InvalidValue { .. }), "{err}");
        // Dismantle iteratively: dropping 100k nested Vecs recursively could overflow the stack.
        while let Value::Array(mut items) = arrays {
            arrays = items.pop().unwrap_or(Value::Null);
        }

        let big = Value::String("x".repeat(MAX_VALUE_BYTES));
        let err = doc.set(&path("big"), &big, None).unwrap_err();
        assert!(matches!(err, DocumentError::ValueTooLarge { max: MAX_VALUE_BYTES }), "{err}");
        let fits = Value::String("x".repeat(MAX_VALUE_BYTES - 2));
        doc.set(&path("big"), &fits, None).unwrap();

        // Several values that fit make a document that does not.
        for i in 0..4 {
            doc.set(&path(&format!("big{i}")), &fits, None).unwrap();
        }
        let err = doc.encode_bounded().unwrap_err();
        assert!(matches!(err, DocumentError::DocumentTooLarge { max: MAX_DOCUMENT_BYTES, .. }), "{err}");
        assert!(err.to_string().contains("delete unused keys"), "{err}");
        assert!(doc.delete(&path("big0")).unwrap());
        assert!(doc.delete(&path("big1")).unwrap());
        assert!(doc.encode_bounded().is_ok());
    }

    #[test]
    fn json_output_is_not_html_escaped() {
        let mut doc = Document::new();
        set(&mut doc, "mail", json!("Micro Team <support@m3o.com> & co"));
        let text = serde_json::to_string(&get(&doc, "")).unwrap();
        assert_eq!(text, r#"{"mail":"Micro Team <support@m3o.com> & co"}"#);
        assert!(String::from_utf8(doc.encode()).unwrap().contains("<support@m3o.com> & co"));
    }
}
