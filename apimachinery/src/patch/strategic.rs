//! Strategic merge patch: a merge patch that knows, from the API types, which lists merge
//! element by element and on which key.

use serde_json::{Map, Value};

use super::PatchError;
use super::merge_keys::{ListMerge, Strategy, Ty};

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";

/// Whether a key of a patch map is a directive rather than a field.
fn is_directive(key: &str) -> bool {
    key == PATCH
        || key == RETAIN_KEYS
        || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
        || key.starts_with(SET_ELEMENT_ORDER)
}

fn invalid(message: impl Into<String>) -> PatchError {
    PatchError::Invalid(message.into())
}

/// What a `$patch` directive asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatchDirective {
    Replace,
    Delete,
    Merge,
}

fn patch_directive(map: &Map<String, Value>) -> Result<Option<PatchDirective>, PatchError> {
    match map.get(PATCH) {
        None => Ok(None),
        Some(Value::String(s)) if s == "replace" => Ok(Some(PatchDirective::Replace)),
        Some(Value::String(s)) if s == "delete" => Ok(Some(PatchDirective::Delete)),
        Some(Value::String(s)) if s == "merge" => Ok(Some(PatchDirective::Merge)),
        Some(other) => Err(invalid(format!(
            "unknown patch directive {PATCH}: {other} (expected replace, delete or merge)"
        ))),
    }
}

/// The field a `$deleteFromPrimitiveList/` or `$setElementOrder/` directive names.
fn directive_field<'k>(key: &'k str, prefix: &str) -> Result<&'k str, PatchError> {
    match key.strip_prefix(prefix) {
        Some(field) if !field.is_empty() => Ok(field),
        _ => Err(invalid(format!("directive {key} does not name a field"))),
    }
}

/// Applies `patch` to the object `doc` whose structure is `root`.
pub(crate) fn apply(
    doc: &Value,
    patch: &Map<String, Value>,
    root: Ty,
) -> Result<Value, PatchError> {
    let original = match doc {
        Value::Object(m) => Some(m.clone()),
        _ => None,
    };
    match merge_map(original, patch, root)? {
        Some(m) => Ok(Value::Object(m)),
        None => Err(invalid(
            "a strategic merge patch may not delete the whole object ($patch: delete at the top)",
        )),
    }
}

/// Merges a patch map into an original map (absent when the field is new). `None` means the
/// map itself is deleted (`$patch: delete`).
fn merge_map(
    original: Option<Map<String, Value>>,
    patch: &Map<String, Value>,
    ty: Ty,
) -> Result<Option<Map<String, Value>>, PatchError> {
    let mut out = match patch_directive(patch)? {
        Some(PatchDirective::Delete) => return Ok(None),
        Some(PatchDirective::Replace) => Map::new(),
        Some(PatchDirective::Merge) | None => original.unwrap_or_default(),
    };

    let retain = match patch.get(RETAIN_KEYS) {
        None => None,
        Some(Value::Array(keys)) => {
            let keys = keys
                .iter()
                .map(|k| {
                    k.as_str().map(str::to_owned).ok_or_else(|| {
                        invalid(format!("{RETAIN_KEYS} must list field names, found {k}"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if let Some((k, _)) = patch
                .iter()
                .find(|(k, v)| !is_directive(k) && !v.is_null() && !keys.contains(k))
            {
                return Err(invalid(format!(
                    "field {k} is set in the patch but not listed in {RETAIN_KEYS} {keys:?}"
                )));
            }
            Some(keys)
        }
        Some(other) => {
            return Err(invalid(format!(
                "{RETAIN_KEYS} must be a list of field names, found {other}"
            )));
        }
    };

    // Deletions from primitive lists apply to the original before the field is merged.
    for (key, values) in patch {
        if !key.starts_with(DELETE_FROM_PRIMITIVE_LIST) {
            continue;
        }
        let field = directive_field(key, DELETE_FROM_PRIMITIVE_LIST)?;
        let Value::Array(values) = values else {
            return Err(invalid(format!("{key} must be a list, found {values}")));
        };
        if let Some(Value::Array(list)) = out.get_mut(field) {
            list.retain(|item| !values.contains(item));
        }
    }

    for (key, value) in patch {
        if is_directive(key) {
            continue;
        }
        if value.is_null() {
            out.shift_remove(key);
            continue;
        }
        let (child, strategy) = ty.field(key);
        let previous = out.get_mut(key).map(std::mem::take);
        match merge_value(previous, value, child, strategy)? {
            Some(merged) => match out.get_mut(key) {
                Some(slot) => *slot = merged,
                None => {
                    out.insert(key.clone(), merged);
                }
            },
            None => {
                out.shift_remove(key);
            }
        }
    }

    for (key, order) in patch {
        if !key.starts_with(SET_ELEMENT_ORDER) {
            continue;
        }
        let field = directive_field(key, SET_ELEMENT_ORDER)?;
        let Value::Array(order) = order else {
            return Err(invalid(format!("{key} must be a list, found {order}")));
        };
        let (_, strategy) = ty.field(field);
        if let Some(Value::Array(list)) = out.get_mut(field) {
            reorder(list, order, strategy.list);
        }
    }

    if let Some(keys) = retain {
        out.retain(|k, _| keys.contains(k));
    }
    Ok(Some(out))
}

/// Merges one patch value into the original value of a field. `None` deletes the field.
fn merge_value(
    original: Option<Value>,
    patch: &Value,
    ty: Ty,
    strategy: Strategy,
) -> Result<Option<Value>, PatchError> {
    match patch {
        Value::Object(p) => {
            let original = match original {
                Some(Value::Object(m)) if !strategy.replace => Some(m),
                _ => None,
            };
            Ok(merge_map(original, p, ty)?.map(Value::Object))
        }
        Value::Array(p) => {
            let original = match original {
                Some(Value::Array(l)) if !strategy.replace => l,
                _ => Vec::new(),
            };
            Ok(Some(Value::Array(merge_list(
                original,
                p,
                ty.items(),
                strategy.list,
            )?)))
        }
        primitive => Ok(Some(primitive.clone())),
    }
}

/// A value taken from the patch with nothing to merge into: its directives are applied to
/// nothing. `None` when it deletes itself.
fn fresh(value: &Value, ty: Ty) -> Result<Option<Value>, PatchError> {
    merge_value(None, value, ty, Strategy::DEFAULT)
}

/// Merges a patch list into an original list.
fn merge_list(
    original: Vec<Value>,
    patch: &[Value],
    items: Ty,
    merge: ListMerge,
) -> Result<Vec<Value>, PatchError> {
    let mut replace = false;
    let mut deletions: Vec<&Value> = Vec::new();
    let mut elements: Vec<&Value> = Vec::new();
    for element in patch {
        let directive = match element {
            Value::Object(m) => patch_directive(m)?,
            _ => None,
        };
        match directive {
            Some(PatchDirective::Replace) => replace = true,
            Some(PatchDirective::Delete) => match merge {
                ListMerge::ByKey(key) => match element.get(key) {
                    Some(value) => deletions.push(value),
                    None => {
                        return Err(invalid(format!(
                            "a list element with $patch: delete must name its merge key {key}: {element}"
                        )));
                    }
                },
                ListMerge::Set => {
                    return Err(invalid(format!(
                        "$patch: delete cannot remove an element from a list of primitives \
                         (use $deleteFromPrimitiveList): {element}"
                    )));
                }
                // A replaced list simply does not get the element.
                ListMerge::Atomic => {}
            },
            Some(PatchDirective::Merge) | None => elements.push(element),
        }
    }

    let fresh_all = |elements: &[&Value]| -> Result<Vec<Value>, PatchError> {
        let mut out = Vec::with_capacity(elements.len());
        for e in elements {
            if let Some(v) = fresh(e, items)? {
                out.push(v);
            }
        }
        Ok(out)
    };

    if replace {
        return fresh_all(&elements);
    }
    match merge {
        ListMerge::Atomic => fresh_all(&elements),
        ListMerge::Set => {
            let mut out = original;
            for v in fresh_all(&elements)? {
                if !out.contains(&v) {
                    out.push(v);
                }
            }
            Ok(out)
        }
        ListMerge::ByKey(key) => {
            let mut out = original;
            out.retain(|item| item.get(key).is_none_or(|v| !deletions.contains(&v)));
            for element in elements {
                let Value::Object(p) = element else {
                    return Err(invalid(format!(
                        "elements of a list merged on {key} must be objects, found {element}"
                    )));
                };
                let Some(wanted) = p.get(key) else {
                    return Err(invalid(format!(
                        "list element {element} does not contain its merge key {key}"
                    )));
                };
                match out.iter().position(|item| item.get(key) == Some(wanted)) {
                    Some(i) => {
                        let previous = match std::mem::take(&mut out[i]) {
                            Value::Object(m) => Some(m),
                            _ => None,
                        };
                        match merge_map(previous, p, items)? {
                            Some(m) => out[i] = Value::Object(m),
                            None => {
                                out.remove(i);
                            }
                        }
                    }
                    None => {
                        if let Some(m) = merge_map(None, p, items)? {
                            out.push(Value::Object(m));
                        }
                    }
                }
            }
            Ok(out)
        }
    }
}

/// Orders a merged list as `$setElementOrder` asks. The elements it names come in its order;
/// each element it does not name stays right after the named element it followed before
/// (or at the front, if no named element preceded it). Names of absent elements are ignored.
fn reorder(list: &mut Vec<Value>, order: &[Value], merge: ListMerge) {
    let rank = |item: &Value| -> Option<usize> {
        match merge {
            ListMerge::ByKey(key) => {
                let value = item.get(key)?;
                order.iter().position(|o| o.get(key).unwrap_or(o) == value)
            }
            ListMerge::Set | ListMerge::Atomic => order.iter().position(|o| o == item),
        }
    };
    let mut leading: Vec<Value> = Vec::new();
    let mut groups: Vec<(usize, Vec<Value>)> = Vec::new();
    for item in list.drain(..) {
        match rank(&item) {
            Some(r) => groups.push((r, vec![item])),
            None => match groups.last_mut() {
                Some((_, group)) => group.push(item),
                None => leading.push(item),
            },
        }
    }
    groups.sort_by_key(|(r, _)| *r);
    list.extend(leading);
    list.extend(groups.into_iter().flat_map(|(_, g)| g));
}
