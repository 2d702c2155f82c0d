//! The project's benchmark: SPEC's workloads on each backend, beside Python.
//!
//! Runs `shared/bench/python_baseline.py` (Python's multiprocessing, fork
//! start method) and the same workloads on the host's backends in one run,
//! and prints each figure beside Python's as a ratio (how many times better)
//! with SPEC's target for it and whether it is met. `--json` prints one JSON
//! object per figure instead (`workload`, `backend`, `value`, `unit`,
//! `python`, `ratio`, `target`, `met`).
//!
//! ```text
//! cargo run --example bench [--features native] -- [--quick] [--json] [--backend thread|native] [--python PATH|none] [--only NAME-PART[,NAME-PART]]...
//! ```
//!
//! A workload is one row of [`WORKLOADS`]: its name, unit, SPEC's targets and
//! a function that measures it on a backend.

use host::{BackendKind, Host, Program};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// SPEC's target for a figure on one backend.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// No target on this backend.
    None,
    /// At most this many units (a cost).
    AtMost(f64),
    /// At least this many units (a throughput).
    AtLeast(f64),
    /// At least this many times Python's figure in the same run (a ratio).
    TimesPython(f64),
}

impl Target {
    fn describe(self, unit: &str) -> Option<String> {
        match self {
            Target::None => None,
            Target::AtMost(v) => Some(format!("<= {} {unit}", short(v))),
            Target::AtLeast(v) => Some(format!(">= {} {unit}", short(v))),
            Target::TimesPython(r) => Some(format!(">= {r}x python")),
        }
    }

    fn met(self, value: f64, ratio: Option<f64>) -> Option<bool> {
        match self {
            Target::None => None,
            Target::AtMost(v) => Some(value <= v),
            Target::AtLeast(v) => Some(value >= v),
            Target::TimesPython(r) => ratio.map(|ratio| ratio >= r),
        }
    }
}

/// One workload: a row of the table.
struct Workload {
    /// SPEC's id and a short name; Python's figure has the same name.
    name: &'static str,
    unit: &'static str,
    /// True when more is better (a throughput), false for costs.
    higher_is_better: bool,
    /// SPEC's targets on the thread and the native backend.
    thread: Target,
    native: Target,
    /// Only in a full run (not `--quick`): it takes long or much memory.
    full_only: bool,
    /// Measures it on the bench's host; `None` when it has no meaning on this backend.
    measure: fn(&Bench) -> anyhow::Result<Option<f64>>,
}

/// Every workload, in the order they run and print. Adding one is a
/// function and a row here.
const WORKLOADS: &[Workload] = &[
    Workload {
        name: "W1-spawn-join-seq",
        unit: "us/process",
        higher_is_better: false,
        thread: Target::AtMost(60.0),
        native: Target::AtMost(500.0),
        full_only: false,
        measure: w1,
    },
    Workload {
        name: "W2-spawn-join-batch",
        unit: "us/process",
        higher_is_better: false,
        thread: Target::AtMost(30.0),
        native: Target::AtMost(400.0),
        full_only: false,
        measure: w2,
    },
    Workload {
        name: "W1b-guest-children-seq",
        unit: "us/child",
        higher_is_better: false,
        thread: Target::None,
        native: Target::AtMost(1000.0),
        full_only: false,
        measure: w1b,
    },
    Workload {
        name: "W2b-guest-children-batch",
        unit: "us/child",
        higher_is_better: false,
        thread: Target::None,
        native: Target::AtMost(500.0),
        full_only: false,
        measure: w2b,
    },
    Workload {
        name: "W3-concurrent-sleep-1s",
        unit: "s wall",
        higher_is_better: false,
        thread: Target::AtMost(1.2),
        native: Target::AtMost(1.2),
        full_only: false,
        measure: w3,
    },
    Workload {
        name: "W3-concurrent-sleep-1s-x10000",
        unit: "s wall",
        higher_is_better: false,
        thread: Target::AtMost(2.5),
        native: Target::None,
        full_only: false,
        measure: w3_x10000,
    },
    Workload {
        name: "W4-terminate-spin",
        unit: "us median",
        higher_is_better: false,
        thread: Target::AtMost(100.0),
        native: Target::AtMost(1000.0),
        full_only: false,
        measure: w4_spin,
    },
    Workload {
        name: "W4-terminate-sleeper",
        unit: "us median",
        higher_is_better: false,
        thread: Target::AtMost(100.0),
        native: Target::AtMost(1000.0),
        full_only: false,
        measure: w4_sleeper,
    },
    Workload {
        name: "W5-pool-map",
        unit: "items/s",
        higher_is_better: true,
        thread: Target::TimesPython(2.0),
        native: Target::TimesPython(1.0),
        full_only: false,
        measure: w5,
    },
    Workload {
        name: "W6-pool-apply-async",
        unit: "tasks/s",
        higher_is_better: true,
        thread: Target::AtLeast(300_000.0),
        native: Target::TimesPython(5.0),
        full_only: false,
        measure: w6,
    },
    Workload {
        name: "W7-rss-per-idle-process",
        unit: "KiB/process",
        higher_is_better: false,
        thread: Target::AtMost(256.0),
        native: Target::AtMost(1518.0),
        full_only: false,
        measure: w7,
    },
    Workload {
        name: "W8-queue-throughput",
        unit: "msgs/s",
        higher_is_better: true,
        thread: Target::AtLeast(1_000_000.0),
        native: Target::TimesPython(2.0),
        full_only: false,
        measure: w8,
    },
    Workload {
        name: "W8b-queue-1MiB-items",
        unit: "MB/s",
        higher_is_better: true,
        thread: Target::AtLeast(1000.0),
        native: Target::TimesPython(2.0),
        full_only: false,
        measure: w8b,
    },
    Workload {
        name: "W9-fork-join-16MiB",
        unit: "us/fork",
        higher_is_better: false,
        thread: Target::None,
        native: Target::TimesPython(0.5),
        full_only: false,
        measure: w9,
    },
    Workload {
        name: "W11-host-run-start-to-exit",
        unit: "ms",
        higher_is_better: false,
        thread: Target::AtMost(30.0),
        native: Target::AtMost(50.0),
        full_only: false,
        measure: w11,
    },
    Workload {
        name: "W12-100k-sleepers-start",
        unit: "s",
        higher_is_better: false,
        thread: Target::AtMost(10.0),
        native: Target::None,
        full_only: true,
        measure: w12_start,
    },
    Workload {
        name: "W12-100k-sleepers-memory",
        unit: "KiB/process",
        higher_is_better: false,
        thread: Target::AtMost(40.0),
        native: Target::None,
        full_only: true,
        measure: w12_memory,
    },
];

/// What the workloads of one backend share.
struct Bench {
    backend: BackendKind,
    quick: bool,
    host: Host,
    /// `children.wasm`: trivial entries (noop, sleep, spin).
    children: Program,
    /// W12's figures, measured once for its two rows.
    w12: std::sync::OnceLock<anyhow::Result<(f64, f64)>>,
}

impl Bench {
    /// `n` in a full run, a fifth of it with `--quick` (at least 10).
    fn scaled(&self, n: f64) -> usize {
        ((n * if self.quick { 0.2 } else { 1.0 }) as usize).max(10)
    }

    fn guest(&self, name: &str) -> anyhow::Result<Program> {
        Ok(self.host.load(Path::new(env!("GUESTS_DIR")).join(format!("{name}.wasm")))?)
    }
}

struct Options {
    quick: bool,
    json: bool,
    backends: Vec<BackendKind>,
    python: Option<PathBuf>,
    /// `--only W8,W2`: the workloads whose names contain one of these
    /// (empty: every workload).
    only: Vec<String>,
}

/// One measured figure, as printed.
struct Row {
    workload: &'static Workload,
    backend: BackendKind,
    value: f64,
    python: Option<f64>,
}

impl Row {
    fn target(&self) -> Target {
        match self.backend {
            BackendKind::Thread => self.workload.thread,
            BackendKind::Native => self.workload.native,
        }
    }

    /// How many times better than Python.
    fn ratio(&self) -> Option<f64> {
        let python = self.python?;
        Some(if self.workload.higher_is_better { self.value / python } else { python / self.value })
    }

    fn json(&self) -> serde_json::Value {
        let target = self.target();
        serde_json::json!({
            "workload": self.workload.name,
            "backend": backend_name(self.backend),
            "value": round(self.value),
            "unit": self.workload.unit,
            "python": self.python.map(round),
            "ratio": self.ratio().map(round),
            "target": target.describe(self.workload.unit),
            "met": target.met(self.value, self.ratio()),
        })
    }
}

fn main() -> anyhow::Result<()> {
    // The native backend re-executes this binary as its worker.
    #[cfg(feature = "native")]
    if std::env::args().nth(1).as_deref() == Some(host::WORKER_ARG) {
        std::process::exit(host::worker::main());
    }
    let options = options()?;
    let mut python = match &options.python {
        Some(script) => python_figures(script, options.quick)?,
        None => HashMap::new(),
    };
    if options.python.is_some() {
        python.insert("W11-host-run-start-to-exit".into(), python_one_process_ms()?);
        let n = if options.quick { QUEUE_BYTES_ITEMS / 5 } else { QUEUE_BYTES_ITEMS };
        python.insert("W8b-queue-1MiB-items".into(), python_queue_bytes(n)?);
        let (seq, batch) = python_guest_children(if options.quick { 60 } else { 300 })?;
        python.insert("W1b-guest-children-seq".into(), seq);
        python.insert("W2b-guest-children-batch".into(), batch);
        if options.backends.contains(&BackendKind::Native) {
            python.insert("W9-fork-join-16MiB".into(), python_fork_join(if options.quick { 20 } else { 100 })?);
        }
    }
    let mut rows = Vec::new();
    for &backend in &options.backends {
        eprintln!("bench: {backend:?} backend...");
        let host = Host::builder().backend(backend).build()?;
        let children = host.load(concat!(env!("GUESTS_DIR"), "/children.wasm"))?;
        let bench = Bench { backend, quick: options.quick, host, children, w12: std::sync::OnceLock::new() };
        // Warm up: the first start pays for lazily built state.
        spawn(&bench.children, "noop", &())?.join()?;
        let chosen =
            |w: &&Workload| options.only.is_empty() || options.only.iter().any(|o| w.name.contains(o.as_str()));
        for workload in WORKLOADS.iter().filter(|w| !(w.full_only && options.quick)).filter(chosen) {
            let Some(value) = (workload.measure)(&bench)? else { continue };
            eprintln!("bench:   {}: {value:.1} {}", workload.name, workload.unit);
            let row = Row { workload, backend, value, python: python.get(python_name(workload.name)).copied() };
            if options.json {
                println!("{}", row.json());
            }
            rows.push(row);
        }
    }
    if !options.json {
        print_table(&rows, &options.backends);
    }
    Ok(())
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        quick: false,
        json: false,
        backends: vec![BackendKind::Thread],
        python: Some(PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/bench/python_baseline.py"))),
        only: Vec::new(),
    };
    if BackendKind::Native.is_available() {
        options.backends.push(BackendKind::Native);
    }
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--json" => options.json = true,
            "--only" => options.only.extend(args.next().unwrap_or_default().split(',').map(str::to_owned)),
            "--backend" => {
                options.backends = vec![args.next().unwrap_or_default().parse().map_err(anyhow::Error::msg)?]
            }
            "--python" => {
                options.python = match args.next().as_deref() {
                    Some("none") | None => None,
                    Some(path) => Some(PathBuf::from(path)),
                }
            }
            other => anyhow::bail!(
                "unknown argument `{other}` (use --quick, --json, --backend NAME, --python PATH|none, --only NAME-PART[,...])"
            ),
        }
    }
    Ok(options)
}

/// The name of Python's figure for a workload (a variant shares its base's).
fn python_name(name: &str) -> &str {
    name.trim_end_matches("-x10000")
}

fn backend_name(backend: BackendKind) -> String {
    format!("{backend:?}").to_lowercase()
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// A figure in few characters: 1.5, 300k, 1M.
fn short(v: f64) -> String {
    if v >= 1e6 && (v / 1e6).fract() == 0.0 {
        format!("{}M", v / 1e6)
    } else if v >= 1e3 && (v / 1e3).fract() == 0.0 {
        format!("{}k", v / 1e3)
    } else {
        format!("{v}")
    }
}

/// Python's figures (fork start method), measured now.
fn python_figures(script: &PathBuf, quick: bool) -> anyhow::Result<HashMap<String, f64>> {
    eprintln!("bench: python multiprocessing (fork)...");
    let mut command = std::process::Command::new("python3");
    command.arg(script);
    if quick {
        command.arg("--quick");
    }
    let output = command.stderr(std::process::Stdio::inherit()).output()?;
    let mut figures = HashMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(record) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if record["peer"] == "python-multiprocessing-fork" {
            let workload = record["workload"].as_str().unwrap_or_default().to_string();
            figures.insert(workload, record["value"].as_f64().unwrap_or(f64::NAN));
        }
    }
    Ok(figures)
}

/// W11's Python side: `python3` running a script that starts and joins one
/// `Process`, start to exit, median milliseconds.
fn python_one_process_ms() -> anyhow::Result<f64> {
    const SCRIPT: &str = "import multiprocessing as mp\n\
def hello():\n    print('hello')\n\
if __name__ == '__main__':\n    p = mp.Process(target=hello)\n    p.start()\n    p.join()\n";
    median_ms(11, || std::process::Command::new("python3").arg("-c").arg(SCRIPT).output().map(|_| ()))
}

/// The median wall milliseconds of `runs` runs of `run`, after one warm-up.
fn median_ms(runs: usize, mut run: impl FnMut() -> std::io::Result<()>) -> anyhow::Result<f64> {
    run()?;
    let mut times = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        run()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn w1(bench: &Bench) -> anyhow::Result<Option<f64>> {
    let n = bench.scaled(500.0);
    let start = Instant::now();
    for _ in 0..n {
        spawn(&bench.children, "noop", &())?.join()?;
    }
    Ok(Some(micros(start.elapsed()) / n as f64))
}

fn w2(bench: &Bench) -> anyhow::Result<Option<f64>> {
    let n = bench.scaled(1000.0);
    let start = Instant::now();
    let processes = (0..n).map(|_| spawn(&bench.children, "noop", &())).collect::<Result<Vec<_>, _>>()?;
    for process in &processes {
        process.join()?;
    }
    Ok(Some(micros(start.elapsed()) / n as f64))
}

/// W1b: a guest's own children, each started and joined before the next
/// (`children spawn-serial N`, timed by the guest), microseconds per child.
fn w1b(bench: &Bench) -> anyhow::Result<Option<f64>> {
    guest_children(bench, "spawn-serial", bench.scaled(300.0)).map(Some)
}

/// W2b: a guest's own children, all started, then all joined
/// (`children spawn-many N`, timed by the guest), microseconds per child.
fn w2b(bench: &Bench) -> anyhow::Result<Option<f64>> {
    guest_children(bench, "spawn-many", bench.scaled(300.0)).map(Some)
}

/// Runs `children SCENARIO N` as a process of the bench's host and returns
/// the microseconds per child it measured.
fn guest_children(bench: &Bench, scenario: &str, n: usize) -> anyhow::Result<f64> {
    let capture = host::Capture::new();
    let process = bench
        .children
        .command()
        .args([scenario.to_string(), n.to_string()])
        .stdout(host::Stdio::capture(&capture))
        .spawn()?;
    anyhow::ensure!(process.join()?.code() == 0, "children {scenario} failed: {:?}", process.failure());
    let text = capture.text();
    let micros = text.lines().find_map(|line| line.strip_prefix("us-per-process: ")).and_then(|v| v.parse().ok());
    micros.ok_or_else(|| anyhow::anyhow!("no figure from children {scenario}: {text}"))
}

/// Python's W1b and W2b (`shared/bench/python_baseline.py` has neither): a
/// `Process` (fork start method) that starts `n` trivial children of its
/// own, one after another and then all at once; microseconds per child.
fn python_guest_children(n: usize) -> anyhow::Result<(f64, f64)> {
    const SCRIPT: &str = r#"
import multiprocessing as mp, sys, time
def noop(): pass
def parent(n, mode, out):
    ctx = mp.get_context("fork")
    t = time.perf_counter()
    if mode == "seq":
        for _ in range(n):
            p = ctx.Process(target=noop); p.start(); p.join()
    else:
        ps = [ctx.Process(target=noop) for _ in range(n)]
        for p in ps: p.start()
        for p in ps: p.join()
    out.put((time.perf_counter() - t) * 1e6 / n)
if __name__ == "__main__":
    n, mode = int(sys.argv[1]), sys.argv[2]
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    p = ctx.Process(target=parent, args=(n, mode, out)); p.start()
    print(out.get()); p.join()
"#;
    eprintln!("bench: python multiprocessing (fork), W1b/W2b-guest-children...");
    let seq = python_figure(&[SCRIPT, &n.to_string(), "seq"])?;
    let batch = python_figure(&[SCRIPT, &n.to_string(), "batch"])?;
    Ok((seq, batch))
}

fn w3(bench: &Bench) -> anyhow::Result<Option<f64>> {
    Ok(Some(sleepers(&bench.children, bench.scaled(1000.0))?.as_secs_f64()))
}

fn w3_x10000(bench: &Bench) -> anyhow::Result<Option<f64>> {
    if bench.backend != BackendKind::Thread {
        return Ok(None);
    }
    Ok(Some(sleepers(&bench.children, bench.scaled(10_000.0))?.as_secs_f64()))
}

fn w4_spin(bench: &Bench) -> anyhow::Result<Option<f64>> {
    terminate_latency(&bench.children, "spin").map(Some)
}

fn w4_sleeper(bench: &Bench) -> anyhow::Result<Option<f64>> {
    terminate_latency(&bench.children, "sleep_forever").map(Some)
}

fn w5(bench: &Bench) -> anyhow::Result<Option<f64>> {
    let pool = host::Pool::new(&bench.guest("pool-square")?, 2)?;
    // Warm up: both workers running.
    let _: Vec<i64> = pool.map("square", 0..100)?;
    let n = bench.scaled(100_000.0);
    let start = Instant::now();
    let results: Vec<i64> = pool.map("square", 0..n as i64)?;
    anyhow::ensure!(results.len() == n, "map lost results");
    Ok(Some(n as f64 / start.elapsed().as_secs_f64()))
}

fn w6(bench: &Bench) -> anyhow::Result<Option<f64>> {
    let pool = host::Pool::new(&bench.guest("pool-square")?, 2)?;
    let _: Vec<i64> = pool.map("square", 0..100)?;
    let n = bench.scaled(10_000.0);
    let start = Instant::now();
    let pending: Vec<host::AsyncResult<i64>> = (0..n as i64).map(|i| pool.apply_async("square", &i)).collect();
    for result in &pending {
        result.get(None)?;
    }
    Ok(Some(n as f64 / start.elapsed().as_secs_f64()))
}

fn w7(bench: &Bench) -> anyhow::Result<Option<f64>> {
    idle_memory(&bench.children, bench.backend, bench.scaled(200.0)).map(Some)
}

fn w8(bench: &Bench) -> anyhow::Result<Option<f64>> {
    queue_throughput(&bench.host, &bench.guest("ipc-queue-throughput")?, bench.scaled(100_000.0)).map(Some)
}

/// W8b: 1 MiB byte items through a bounded `Queue` from one process to
/// another, MB/s from the first start to the last end.
fn w8b(bench: &Bench) -> anyhow::Result<Option<f64>> {
    let n = bench.scaled(QUEUE_BYTES_ITEMS as f64);
    let program = bench.guest("ipc-queue-throughput")?;
    let queue = host::sync::Queue::new(&bench.host, QUEUE_BYTES_BOUND)?;
    let args = (&queue, n as u64, QUEUE_BYTES_SIZE as u64);
    let start = Instant::now();
    let consumer = program.command().entry("consume_bytes").input(&args).stdout(host::Stdio::null()).spawn()?;
    let producer = program.command().entry("produce_bytes").input(&args).spawn()?;
    anyhow::ensure!(producer.join()?.success() && consumer.join()?.success(), "the byte-queue processes failed");
    Ok(Some((n * QUEUE_BYTES_SIZE) as f64 / start.elapsed().as_secs_f64() / 1e6))
}

/// How many items W8b sends in a full run.
const QUEUE_BYTES_ITEMS: usize = 200;
/// Each W8b item's size.
const QUEUE_BYTES_SIZE: usize = 1 << 20;
/// W8b's queue bound, the same on both sides: a producer faster than its
/// consumer waits rather than parks every item in the host.
const QUEUE_BYTES_BOUND: u32 = 16;

/// Python's W8b (`shared/bench/python_baseline.py` has none): the same two
/// processes, fork start method, MB/s.
fn python_queue_bytes(n: usize) -> anyhow::Result<f64> {
    const SCRIPT: &str = r#"
import multiprocessing as mp, sys, time
def produce(q, n, size):
    item = bytes(size)
    for _ in range(n): q.put(item)
def consume(q, n):
    for _ in range(n): q.get()
if __name__ == "__main__":
    n, size, bound = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    ctx = mp.get_context("fork")
    q = ctx.Queue(bound)
    c = ctx.Process(target=consume, args=(q, n)); p = ctx.Process(target=produce, args=(q, n, size))
    t = time.perf_counter(); c.start(); p.start(); p.join(); c.join()
    print(n * size / (time.perf_counter() - t) / 1e6)
"#;
    eprintln!("bench: python multiprocessing (fork), W8b-queue-1MiB-items...");
    python_figure(&[SCRIPT, &n.to_string(), &QUEUE_BYTES_SIZE.to_string(), &QUEUE_BYTES_BOUND.to_string()])
}

/// W9 (native only): microseconds per `mp::fork()` + join of a guest with
/// 16 MiB of linear memory in use (measured by the guest, `fork bench N`).
fn w9(bench: &Bench) -> anyhow::Result<Option<f64>> {
    if bench.backend != BackendKind::Native {
        return Ok(None);
    }
    let n = bench.scaled(100.0);
    let capture = host::Capture::new();
    let process = bench
        .guest("fork")?
        .command()
        .args(["bench".to_string(), n.to_string()])
        .stdout(host::Stdio::capture(&capture))
        .spawn()?;
    anyhow::ensure!(process.join()?.code() == 0, "the fork bench failed: {:?}", process.failure());
    let text = capture.text();
    let micros = text.lines().find_map(|line| line.strip_prefix("us-per-fork: ")).and_then(|v| v.parse().ok());
    micros.map(Some).ok_or_else(|| anyhow::anyhow!("no figure from the fork bench: {text}"))
}

/// Python's W9: `os.fork()` + `os.waitpid` of a process with a 16 MiB
/// bytearray, its child ending at once with `os._exit(0)` (microseconds).
fn python_fork_join(n: usize) -> anyhow::Result<f64> {
    const SCRIPT: &str = r"
import os, sys, time
n = int(sys.argv[1])
memory = bytearray(b'\x01') * (16 << 20)
start = time.perf_counter()
for _ in range(n):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
print((time.perf_counter() - start) * 1e6 / n)
";
    eprintln!("bench: python os.fork, W9-fork-join-16MiB...");
    python_figure(&[SCRIPT, &n.to_string()])
}

/// The one figure `python3 -c SCRIPT ARGS...` prints.
fn python_figure(args: &[&str]) -> anyhow::Result<f64> {
    let output = std::process::Command::new("python3").arg("-c").args(args).output()?;
    anyhow::ensure!(output.status.success(), "python3: {}", String::from_utf8_lossy(&output.stderr));
    Ok(String::from_utf8_lossy(&output.stdout).trim().parse()?)
}

/// The `host` binary beside this example (`target/debug/host`).
fn host_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().and_then(Path::parent).ok_or_else(|| anyhow::anyhow!("no target directory"))?;
    let host = dir.join("host");
    anyhow::ensure!(host.is_file(), "{} is missing: `cargo build --features native` makes it", host.display());
    let version = std::process::Command::new(&host).arg("--version").output()?;
    anyhow::ensure!(
        !cfg!(feature = "native") || String::from_utf8_lossy(&version.stdout).contains("native"),
        "{} was built without the native backend: `cargo build --features native` first (`just bench` does)",
        host.display()
    );
    Ok(host)
}

/// `host run hello.wasm`, start to exit, median milliseconds from the second
/// run on (the first fills the compile cache).
fn w11(bench: &Bench) -> anyhow::Result<Option<f64>> {
    let host = host_binary()?;
    let hello = concat!(env!("GUESTS_DIR"), "/hello.wasm");
    let backend = backend_name(bench.backend);
    let ms = median_ms(11, || {
        let out = std::process::Command::new(&host).args(["run", "-q", "--backend", &backend, hello]).output()?;
        if out.status.success() { Ok(()) } else { Err(std::io::Error::other("host run hello.wasm failed")) }
    })?;
    Ok(Some(ms))
}

/// `host run --count 100000 --max-processes 100000 --timeout 8s sleep.wasm`:
/// seconds until every process has said it sleeps, and the host's peak
/// resident memory per process that did (KiB).
fn w12(bench: &Bench) -> anyhow::Result<(f64, f64)> {
    const N: usize = 100_000;
    let host = host_binary()?;
    let dir = tempfile::tempdir()?;
    let out_path = dir.path().join("stdout");
    let start = Instant::now();
    let mut child = std::process::Command::new(&host)
        .args(["run", "-q", "--backend", &backend_name(bench.backend), "--count", &N.to_string()])
        .args(["--max-processes", &N.to_string(), "--timeout", "8s", concat!(env!("GUESTS_DIR"), "/sleep.wasm")])
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let mut all_started = None;
    let mut peak_rss = 0u64;
    let mut sleeping = 0;
    while child.try_wait()?.is_none() {
        std::thread::sleep(Duration::from_millis(200));
        peak_rss = peak_rss.max(rss_kib(child.id()));
        if all_started.is_none() {
            sleeping = std::fs::read(&out_path).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count());
            if sleeping >= N {
                all_started = Some(start.elapsed().as_secs_f64());
            }
        }
    }
    // Not all sleeping before the timeout: the run's whole time stands in,
    // and the memory is shared among those that were (fewer live processes
    // would otherwise read as less memory each).
    let started = all_started.unwrap_or(f64::INFINITY);
    Ok((started, peak_rss as f64 / sleeping.clamp(1, N) as f64))
}

fn w12_start(bench: &Bench) -> anyhow::Result<Option<f64>> {
    if bench.backend != BackendKind::Thread {
        return Ok(None);
    }
    match bench.w12.get_or_init(|| w12(bench)) {
        Ok((start, _)) => Ok(Some(*start)),
        Err(e) => anyhow::bail!("W12: {e}"),
    }
}

fn w12_memory(bench: &Bench) -> anyhow::Result<Option<f64>> {
    if bench.backend != BackendKind::Thread {
        return Ok(None);
    }
    match bench.w12.get_or_init(|| w12(bench)) {
        Ok((_, memory)) => Ok(Some(*memory)),
        Err(e) => anyhow::bail!("W12: {e}"),
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn spawn<T: serde::Serialize>(program: &Program, entry: &str, input: &T) -> Result<host::Process, host::Error> {
    program.command().entry(entry).input(input).spawn()
}

fn micros(time: Duration) -> f64 {
    time.as_secs_f64() * 1e6
}

fn sleepers(program: &Program, n: usize) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let processes = (0..n).map(|_| spawn(program, "sleep_secs", &1.0)).collect::<Result<Vec<_>, _>>()?;
    for process in &processes {
        process.join()?;
    }
    Ok(start.elapsed())
}

/// Median microseconds from `terminate` to a finished `join`.
fn terminate_latency(program: &Program, entry: &str) -> anyhow::Result<f64> {
    let mut latencies = Vec::new();
    for _ in 0..21 {
        let process = spawn(program, entry, &())?;
        std::thread::sleep(Duration::from_millis(20));
        let start = Instant::now();
        process.terminate()?;
        let code = process.join()?;
        latencies.push(micros(start.elapsed()));
        anyhow::ensure!(code.code() == -15, "terminate gave {code}");
    }
    latencies.sort_by(f64::total_cmp);
    Ok(latencies[latencies.len() / 2])
}

/// KiB of proportional set size each idle (sleeping) process adds.
fn idle_memory(program: &Program, backend: BackendKind, n: usize) -> anyhow::Result<f64> {
    let before = pss_kib(std::process::id());
    let processes = (0..n).map(|_| spawn(program, "sleep_secs", &3.0)).collect::<Result<Vec<_>, _>>()?;
    std::thread::sleep(Duration::from_secs(1));
    let total = match backend {
        BackendKind::Thread => pss_kib(std::process::id()).saturating_sub(before),
        BackendKind::Native => processes.iter().filter_map(|p| p.pid()).map(pss_kib).sum(),
    };
    for process in &processes {
        process.join()?;
    }
    Ok(total as f64 / n as f64)
}

/// Messages per second through a `Queue` from one process to another: `n`
/// small messages, from the producer's start to the consumer's end.
fn queue_throughput(host: &Host, program: &Program, n: usize) -> anyhow::Result<f64> {
    let queue = host::sync::Queue::new(host, 0)?;
    let args = (&queue, n as u64);
    let start = Instant::now();
    let consumer = program.command().entry("consume").input(&args).stdout(host::Stdio::null()).spawn()?;
    let producer = program.command().entry("produce").input(&args).spawn()?;
    anyhow::ensure!(producer.join()?.success() && consumer.join()?.success(), "the W8 processes failed");
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn pss_kib(pid: u32) -> u64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    rollup
        .lines()
        .find_map(|line| line.strip_prefix("Pss:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn print_table(rows: &[Row], backends: &[BackendKind]) {
    let mut header = format!("| {:<30} | {:>11} | {:>11} |", "workload", "unit", "python fork");
    for backend in backends {
        let name = backend_name(*backend);
        header += &format!(" {name:>11} | {:>6} | {:>14} | {:>3} |", "ratio", "target", "met");
    }
    println!("{header}");
    println!("|{}", "---|".repeat(3 + 4 * backends.len()));
    for workload in WORKLOADS {
        let of =
            |backend: BackendKind| rows.iter().find(|r| std::ptr::eq(r.workload, workload) && r.backend == backend);
        let Some(first) = backends.iter().find_map(|b| of(*b)) else { continue };
        let python = first.python.map_or("-".into(), |v| format!("{v:.1}"));
        let mut line = format!("| {:<30} | {:>11} | {python:>11} |", workload.name, workload.unit);
        for backend in backends {
            match of(*backend) {
                Some(row) => {
                    let target = row.target();
                    let met = match target.met(row.value, row.ratio()) {
                        Some(true) => "yes",
                        Some(false) => "no",
                        None => "-",
                    };
                    line += &format!(
                        " {:>11.1} | {:>6} | {:>14} | {met:>3} |",
                        row.value,
                        row.ratio().map_or("-".into(), |r| format!("{r:.1}x")),
                        target
                            .describe(workload.unit)
                            .map_or("-".into(), |t| t.replace(workload.unit, "").trim().to_string()),
                    );
                }
                None => line += &format!(" {:>11} | {:>6} | {:>14} | {:>3} |", "-", "-", "-", "-"),
            }
        }
        println!("{line}");
    }
    println!();
    println!("ratio: how many times better than Python (fork) in the same run; target: SPEC's, on that backend.");
    println!("W11's python: `python3` running a script with one Process, start to exit (median ms).");
}
