//! Stack frames (v2 `stacktrace`, v3 `st`).
//!
//! Invariants: v2 frames are read in one pass over their keys (the hot
//! path; a later duplicate key wins) and need `classname` or `filename`; v3
//! frames are read key by key and need `f`. An empty or null frame is a
//! violation, any other non-object a decode error.

use super::fields::*;
use super::*;
use crate::model::event::*;

pub(crate) fn frames(ctx: &mut Ctx, o: Obj<'_>, k: &'static str) -> R<Vec<Frame>> {
    let Some(a) = arr(o, k)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(a.len());
    for v in a {
        let Some(f) = set_element(ctx, k, v)? else {
            continue;
        };
        // one pass over the frame's keys (hot path); later duplicates win
        let mut fr = Frame::default();
        let (mut has_class, mut has_file) = (false, false);
        for (key, v) in f.iter() {
            match key {
                "filename" => {
                    let s = v_str(key, v)?;
                    has_file = s.is_some();
                    fr.filename = SharedStr::intern(s.unwrap_or_default());
                }
                "classname" => {
                    let s = v_str(key, v)?;
                    has_class = s.is_some();
                    fr.classname = SharedStr::intern(s.unwrap_or_default());
                }
                "abs_path" => fr.abs_path = SharedStr::intern(v_str(key, v)?.unwrap_or_default()),
                "context_line" => {
                    fr.context_line = SharedStr::intern(v_str(key, v)?.unwrap_or_default())
                }
                "function" => fr.function = SharedStr::intern(v_str(key, v)?.unwrap_or_default()),
                "module" => fr.module = SharedStr::intern(v_str(key, v)?.unwrap_or_default()),
                "post_context" => fr.post_context = v_shared_arr(key, v)?,
                "pre_context" => fr.pre_context = v_shared_arr(key, v)?,
                "lineno" => fr.lineno = v_int(key, v)?,
                "colno" => fr.colno = v_int(key, v)?,
                "library_frame" => fr.library_frame = v_bool(key, v)?.unwrap_or(false),
                "vars" => fr.vars = v_json_obj(key, v)?,
                _ => {}
            }
        }
        if !has_class && !has_file {
            ctx.push(k);
            ctx.fail(|| "requires at least one of the fields 'classname;filename'".into());
            ctx.pop();
        }
        out.push(fr);
    }
    Ok(out)
}

pub(crate) fn rum_frames(ctx: &mut Ctx, o: Obj<'_>, k: &'static str) -> R<Vec<Frame>> {
    let Some(a) = arr(o, k)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(a.len());
    for v in a {
        let Some(f) = set_element(ctx, k, v)? else {
            continue;
        };
        let filename = opt_str(f, "f")?;
        ctx.push(k);
        ctx.required("f", filename.is_some());
        ctx.pop();
        out.push(Frame {
            abs_path: shared(f, "ap")?,
            filename: SharedStr::intern(filename.unwrap_or_default()),
            classname: shared(f, "cn")?,
            function: shared(f, "fn")?,
            module: shared(f, "mo")?,
            lineno: int(f, "li")?,
            colno: int(f, "co")?,
            context_line: shared(f, "cli")?,
            pre_context: shared_arr(f, "prc")?,
            post_context: shared_arr(f, "poc")?,
            ..Default::default()
        });
    }
    Ok(out)
}
