//! The admin side of [`RedisCluster`](super::RedisCluster): `CLUSTER` commands on one node,
//! waiting for a condition, and reading `CLUSTER NODES` and `INFO`.

use std::thread;
use std::time::{Duration, Instant};

use backbone_core::Error;

use super::super::server::RedisServer;

const IO_TIMEOUT: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(50);

/// `CLUSTER` and `args`.
pub(super) fn cmd(args: &[&str]) -> redis::Cmd {
    let mut cmd = redis::cmd("CLUSTER");
    for arg in args {
        cmd.arg(*arg);
    }
    cmd
}

/// [`query`], its error an [`Error::Config`].
pub(super) fn run<T: redis::FromRedisValue>(
    node: &RedisServer,
    cmd: redis::Cmd,
) -> Result<T, Error> {
    query(node, cmd).map_err(Error::Config)
}

/// Runs `cmd` on a fresh connection to `node`, with 2 s timeouts; the error says where and what.
pub(super) fn query<T: redis::FromRedisValue>(
    node: &RedisServer,
    cmd: redis::Cmd,
) -> Result<T, String> {
    let fail = |e: &dyn std::fmt::Display| format!("{} on {}: {e}", describe(&cmd), node.url());
    let client = node.client().map_err(|e| fail(&e))?;
    let mut conn = client
        .get_connection_with_timeout(IO_TIMEOUT)
        .map_err(|e| fail(&e))?;
    conn.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| fail(&e))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| fail(&e))?;
    cmd.query(&mut conn).map_err(|e| fail(&e))
}

pub(super) fn describe(cmd: &redis::Cmd) -> String {
    let args = cmd.args_iter().map(|arg| match arg {
        redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        _ => "<cursor>".into(),
    });
    args.collect::<Vec<_>>().join(" ")
}

/// Calls `check` until it is `Ok` or `deadline` passes; the error names `what` and the reason
/// `check` gave last.
pub(super) fn wait_for(
    deadline: Instant,
    what: &str,
    mut check: impl FnMut() -> Result<(), String>,
) -> Result<(), Error> {
    loop {
        let reason = match check() {
            Ok(()) => return Ok(()),
            Err(reason) => reason,
        };
        if Instant::now() >= deadline {
            return Err(Error::Config(format!(
                "gave up waiting for {what}: {reason}"
            )));
        }
        thread::sleep(POLL);
    }
}

/// The value of `name:` in an `INFO` reply.
pub(super) fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// A line of `CLUSTER NODES`.
#[derive(Debug)]
pub(super) struct NodeLine {
    pub port: u16,
    pub flags: Vec<String>,
    pub slots: Vec<(u16, u16)>,
}

impl NodeLine {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    pub fn is_master(&self) -> bool {
        self.has_flag("master")
    }

    pub fn is_failing(&self) -> bool {
        self.has_flag("fail") || self.has_flag("fail?") || self.has_flag("noaddr")
    }
}

/// `<id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot>...`;
/// slots in migration (`[...]`) are skipped.
pub(super) fn parse_nodes(text: &str) -> Vec<NodeLine> {
    let parse = |line: &str| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let addr = fields.get(1)?.split(['@', ',']).next()?;
        let port = addr.rsplit_once(':')?.1.parse().ok()?;
        let flags = fields.get(2)?.split(',').map(String::from).collect();
        let slots = fields.get(8..).unwrap_or_default().iter();
        let slots = slots
            .filter(|s| !s.starts_with('['))
            .filter_map(|s| match s.split_once('-') {
                Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                None => s.parse().ok().map(|a| (a, a)),
            })
            .collect();
        Some(NodeLine { port, flags, slots })
    };
    text.lines().filter_map(parse).collect()
}

/// `(first slot, last slot, port of the master serving them)`.
pub(super) type SlotRange = (u16, u16, u16);

/// Every slot range a master serves, by first slot.
pub(super) fn owners(view: &[NodeLine]) -> Vec<SlotRange> {
    let mut owners: Vec<SlotRange> = view
        .iter()
        .filter(|line| line.is_master())
        .flat_map(|line| line.slots.iter().map(|&(a, b)| (a, b, line.port)))
        .collect();
    owners.sort_unstable();
    owners
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_lines_are_parsed() {
        let text = "e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460 7000 [7001->-abcd]\n\
                    a1b2 127.0.0.1:30004@40004,host slave e7d1 0 1 1 connected\n";
        let view = parse_nodes(text);
        assert_eq!(view.len(), 2);
        assert_eq!(view[0].port, 30001);
        assert_eq!(view[0].slots, vec![(0, 5460), (7000, 7000)]);
        assert!(view[0].is_master() && !view[1].is_master());
        assert_eq!(view[1].port, 30004);
        assert_eq!(owners(&view), vec![(0, 5460, 30001), (7000, 7000, 30001)]);
    }
}
