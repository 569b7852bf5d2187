//! The control socket of a running server: one request line in, one JSON line out.
//!
//! Requests: `status`, `fail LEG`, `remove LEG`, `add [--force] DEVICE` (LEG is a slot index or the
//! device name the leg was given as). Answers: `{"ok":true,...}` or `{"ok":false,"error":"..."}`.
use crate::dev::{random_uuid, uuid_str, Dev, LegSpec};
use crate::engine::{Ctl, Msg};
use crate::meta;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Sender};

/// Default control socket path (relative to the working directory, next to the default legs).
pub const DEFAULT_CONTROL: &str = "./dmirror-data/control.sock";

/// Bind a unix socket at `path`, replacing a stale socket file but refusing one a live server
/// answers on. Nothing is created on error.
pub fn bind_unix(path: &Path, what: &str) -> Result<UnixListener, String> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(format!(
                "{what} {} is in use by a running server",
                path.display()
            ));
        }
        let is_sock = std::fs::symlink_metadata(path)
            .map(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            .unwrap_or(false);
        if !is_sock {
            return Err(format!(
                "{what} {} exists and is not a socket",
                path.display()
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove stale {what} {}: {e}", path.display()))?;
    }
    UnixListener::bind(path).map_err(|e| {
        let m = e.to_string();
        let m = m.split(" (os error").next().unwrap_or(&m).to_string();
        format!("cannot create {what} {}: {m}", path.display())
    })
}

pub struct Ctx {
    pub mirror_uuid: [u8; 16],
    pub name: String,
    pub sector_size: u32,
    pub engine: Sender<Msg>,
}

pub fn serve(l: UnixListener, ctx: Ctx) {
    let ctx = std::sync::Arc::new(ctx);
    for s in l.incoming() {
        let Ok(s) = s else { continue };
        let ctx = std::sync::Arc::clone(&ctx);
        std::thread::spawn(move || {
            let Ok(rs) = s.try_clone() else { return };
            let mut w = s;
            for line in BufReader::new(rs).lines() {
                let Ok(line) = line else { return };
                let v = request(&ctx, line.trim());
                let mut out = v.to_string();
                out.push('\n');
                if w.write_all(out.as_bytes()).is_err() {
                    return;
                }
            }
        });
    }
}

/// Ask the engine and wait for its answer.
fn ask(ctx: &Ctx, c: Ctl) -> Value {
    let (tx, rx) = channel();
    if ctx.engine.send(Msg::Control(c, tx)).is_err() {
        return json!({"ok": false, "error": "the server is stopping"});
    }
    rx.recv()
        .unwrap_or_else(|_| json!({"ok": false, "error": "the server is stopping"}))
}

fn err(s: impl Into<String>) -> Value {
    json!({"ok": false, "error": s.into()})
}

/// Resolve a leg given as index or device name against the status.
fn find_leg(status: &Value, what: &str) -> Result<u8, String> {
    let legs = status["legs"].as_array().cloned().unwrap_or_default();
    if let Ok(i) = what.parse::<u8>() {
        if usize::from(i) < legs.len() {
            return Ok(i);
        }
        return Err(format!("no leg {i} (the mirror has {} legs)", legs.len()));
    }
    for l in &legs {
        if l["device"].as_str() == Some(what) {
            return Ok(l["index"].as_u64().unwrap_or(0) as u8);
        }
    }
    Err(format!("no leg named {what}"))
}

fn request(ctx: &Ctx, line: &str) -> Value {
    let mut words = line.split_whitespace();
    let cmd = words.next().unwrap_or("");
    let args: Vec<&str> = words.collect();
    match cmd {
        "status" => {
            let mut v = ask(ctx, Ctl::Status);
            if let Some(s) = v.get_mut("status").and_then(|s| s.as_object_mut()) {
                s.insert("name".into(), json!(ctx.name));
                s.insert("mirror_uuid".into(), json!(uuid_str(&ctx.mirror_uuid)));
            }
            v
        }
        "fail" | "remove" => {
            let [what] = args.as_slice() else {
                return err(format!("usage: {cmd} LEG"));
            };
            let st = ask(ctx, Ctl::Status);
            let leg = match find_leg(&st["status"], what) {
                Ok(l) => l,
                Err(e) => return err(e),
            };
            ask(
                ctx,
                if cmd == "fail" {
                    Ctl::Fail(leg)
                } else {
                    Ctl::Remove(leg)
                },
            )
        }
        "add" => {
            let force = args.contains(&"--force");
            let rest: Vec<&&str> = args.iter().filter(|a| **a != "--force").collect();
            let [what] = rest.as_slice() else {
                return err("usage: add [--force] DEVICE");
            };
            match add(ctx, what, force) {
                Ok(v) => v,
                Err(e) => err(e),
            }
        }
        _ => err(format!(
            "unknown request '{cmd}' (status, add, remove, fail)"
        )),
    }
}

fn add(ctx: &Ctx, what: &str, force: bool) -> Result<Value, String> {
    let spec = LegSpec::parse(what)?;
    let dev = Dev::open(&spec, true)?;
    let st = ask(ctx, Ctl::Status);
    let legs = st["status"]["legs"].as_array().cloned().unwrap_or_default();
    let state_of = |i: usize| {
        legs.get(i)
            .and_then(|l| l["state"].as_str())
            .unwrap_or("")
            .to_string()
    };
    let free = |s: &str| matches!(s, "empty" | "failed" | "missing");
    let probe = meta::probe(&dev);
    let mut slot = None;
    let mut uuid = None;
    let mut incremental = false;
    match &probe {
        Ok(Some(m)) if m.label.mirror_uuid == ctx.mirror_uuid => {
            let u = uuid_str(&m.label.leg_uuid);
            if let Some(l) = legs.iter().find(|l| l["uuid"].as_str() == Some(u.as_str())) {
                let i = l["index"].as_u64().unwrap_or(0) as usize;
                let s = state_of(i);
                if !free(&s) {
                    return Err(format!("{what} is leg {i} of this mirror and already {s}"));
                }
                slot = Some(i);
                uuid = Some(m.label.leg_uuid);
                incremental = s == "missing";
            } else if !force {
                return Err(format!(
                    "{what} was a leg of this mirror but is no longer a member; pass --force to add it as a new leg (full resync)"
                ));
            }
        }
        Ok(Some(m)) => {
            if !force {
                return Err(format!(
                    "{what} carries metadata of another mirror ({}); pass --force to overwrite it",
                    uuid_str(&m.label.mirror_uuid)
                ));
            }
        }
        Ok(None) => {}
        Err(e) => {
            if !force {
                return Err(format!("{e}; pass --force to overwrite it"));
            }
        }
    }
    let slot = match slot {
        Some(s) => s,
        None => ["empty", "failed", "missing"]
            .iter()
            .find_map(|want| (0..legs.len()).find(|i| state_of(*i) == *want))
            .ok_or_else(|| {
                "no free leg slot: every leg is in use (remove one first)".to_string()
            })?,
    };
    let uuid = match uuid {
        Some(u) => u,
        None => random_uuid()?,
    };
    let sectors = dev.bytes / u64::from(ctx.sector_size);
    let v = ask(
        ctx,
        Ctl::Add {
            slot: slot as u8,
            dev: Box::new(dev),
            uuid,
            sectors,
            incremental,
        },
    );
    if v["ok"].as_bool() == Some(true) {
        Ok(json!({"ok": true, "leg": slot, "incremental": incremental}))
    } else {
        Ok(v)
    }
}

/// Client side: send one request, return the answer.
pub fn call(path: &PathBuf, line: &str) -> Result<Value, String> {
    let mut s = UnixStream::connect(path).map_err(|e| {
        let m = e.to_string();
        let m = m.split(" (os error").next().unwrap_or(&m).to_string();
        format!(
            "cannot reach a server at control socket {}: {m}",
            path.display()
        )
    })?;
    s.write_all(format!("{line}\n").as_bytes())
        .map_err(|e| format!("control socket: {e}"))?;
    let mut r = BufReader::new(s);
    let mut out = String::new();
    r.read_line(&mut out)
        .map_err(|e| format!("control socket: {e}"))?;
    serde_json::from_str(&out)
        .map_err(|_| format!("control socket {} gave no answer", path.display()))
}
