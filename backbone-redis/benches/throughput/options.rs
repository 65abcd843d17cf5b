//! Command-line options. `cargo bench` adds `--bench`, which is ignored.

use serde::Serialize;

pub const USAGE: &str = "\
cargo bench -p backbone-redis --bench throughput -- [OPTIONS]

Framework vs raw redis-rs doing the same Redis work, on $REDIS_URL or a redis-server of its own.

  --events N      events per produce/consume/append run (default 100000; --quick: 10000)
  --quick         a short run: fewer events and rounds, 1 s latency runs, a 100k-entry long
                  stream instead of 1M
  --json          print one JSON object with every figure and ratio (progress goes to stderr)
  --tasks K       concurrent producer tasks (default 4)
  --in-flight D   requests each producer task keeps in flight (default 8)
  --batch B       consumer batch size (default 100)
  --rounds R      alternated framework/raw rounds per scenario (default 3; --quick: 2)
  --duration S    seconds of latency runs per side and rate, split over the rounds
                  (default 10; --quick: 1)
  --rates A,B     offered rates of the latency runs, events/s (default 1000,10000)
  --long N        entries of the long stream of scenario 5 (default 1000000; --quick: 100000)
  --only LIST     run only these scenarios, e.g. produce,latency (of: produce, consume,
                  latency, append, long_stream, memory, cluster, instrumented,
                  inline, personal, object)
  --help          this text";

/// The scenarios, in the order they run.
pub const SCENARIOS: [&str; 11] = [
    "produce",
    "consume",
    "latency",
    "append",
    "long_stream",
    "memory",
    "cluster",
    "instrumented",
    "inline",
    "personal",
    "object",
];

#[derive(Debug, Clone, Serialize)]
pub struct Options {
    pub quick: bool,
    pub json: bool,
    pub events: u64,
    pub tasks: u64,
    pub in_flight: usize,
    pub batch: usize,
    pub rounds: usize,
    pub duration_s: f64,
    pub rates: Vec<u64>,
    /// Entries of the short stream of scenario 5 (fixed) and of the long one.
    pub short_len: u64,
    pub long_len: u64,
    /// The scenarios to run (empty: all).
    pub only: Vec<String>,
}

impl Options {
    /// Parses `args` (without the program name); `Ok(None)` for `--help`.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Options>, String> {
        let mut quick = false;
        let mut json = false;
        let (mut events, mut tasks, mut in_flight, mut batch) = (None, 4, 8, 100);
        let (mut rounds, mut duration, mut rates, mut long) = (None, None, None, None);
        let mut only = Vec::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .ok_or_else(|| format!("{name} needs a value\n\n{USAGE}"))
            };
            match arg.as_str() {
                "--bench" => {}
                "--quick" => quick = true,
                "--json" => json = true,
                "--help" | "-h" => return Ok(None),
                "--events" => events = Some(number(&arg, value(&arg)?)?),
                "--tasks" => tasks = number(&arg, value(&arg)?)?,
                "--in-flight" => in_flight = number(&arg, value(&arg)?)?,
                "--batch" => batch = number(&arg, value(&arg)?)?,
                "--rounds" => rounds = Some(number(&arg, value(&arg)?)?),
                "--duration" => duration = Some(number(&arg, value(&arg)?)?),
                "--long" => long = Some(number(&arg, value(&arg)?)?),
                "--only" => {
                    only = value(&arg)?
                        .split(',')
                        .map(|s| s.trim().to_owned())
                        .collect();
                    let known = SCENARIOS;
                    if let Some(bad) = only.iter().find(|s| !known.contains(&s.as_str())) {
                        return Err(format!("--only: unknown scenario {bad:?} (of {known:?})"));
                    }
                }
                "--rates" => {
                    let list = value(&arg)?;
                    let parsed: Result<Vec<u64>, String> = list
                        .split(',')
                        .map(|r| number(&arg, r.trim().to_owned()))
                        .collect();
                    rates = Some(parsed?);
                }
                other => return Err(format!("unknown option {other:?}\n\n{USAGE}")),
            }
        }
        let opts = Options {
            quick,
            json,
            events: events.unwrap_or(if quick { 10_000 } else { 100_000 }),
            tasks,
            in_flight,
            batch,
            rounds: rounds.unwrap_or(if quick { 2 } else { 3 }),
            duration_s: duration.unwrap_or(if quick { 1.0 } else { 10.0 }),
            rates: rates.unwrap_or_else(|| vec![1_000, 10_000]),
            short_len: 10_000,
            long_len: long.unwrap_or(if quick { 100_000 } else { 1_000_000 }),
            only,
        };
        if opts.events == 0 || opts.tasks == 0 || opts.in_flight == 0 || opts.batch == 0 {
            return Err("--events, --tasks, --in-flight and --batch must be at least 1".into());
        }
        if opts.rounds == 0 || opts.duration_s <= 0.0 || opts.rates.contains(&0) {
            return Err("--rounds, --duration and --rates must be positive".into());
        }
        if opts.long_len < opts.short_len {
            return Err(format!("--long must be at least {}", opts.short_len));
        }
        Ok(Some(opts))
    }
}

fn number<T: std::str::FromStr>(name: &str, v: String) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    v.replace('_', "")
        .parse()
        .map_err(|e| format!("{name} {v:?}: {e}"))
}
