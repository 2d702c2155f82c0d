//! The project's benchmark: the README's workloads (Performance) on each backend, beside Python.
//!
//! Runs `shared/bench/python_baseline.py` (Python's multiprocessing, fork
//! start method) and the same workloads on the host's backends in one run,
//! and prints each figure beside Python's as a ratio (how many times better).
//!
//! ```text
//! cargo run --example bench [--features native] -- [--quick] [--backend thread|native] [--python PATH|none]
//! ```

use host::{BackendKind, Host, Program};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One workload's figure.
#[derive(Clone, Copy)]
struct Figure {
    value: f64,
    /// True when more is better (throughput), false for costs.
    higher_is_better: bool,
}

struct Options {
    quick: bool,
    backends: Vec<BackendKind>,
    python: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    // The native backend re-executes this binary as its worker.
    #[cfg(feature = "native")]
    if std::env::args().nth(1).as_deref() == Some(host::WORKER_ARG) {
        std::process::exit(host::worker::main());
    }
    let options = options()?;
    let mut python = options.python.as_ref().map(|script| python_figures(script, options.quick)).transpose()?;
    if let Some(figures) = &mut python
        && options.backends.contains(&BackendKind::Native)
    {
        let n = if options.quick { 20 } else { 100 };
        figures.insert("W9-fork-join-16MiB".into(), python_fork_join(n)?);
    }
    if let Some(figures) = python.as_mut() {
        queue_bytes_python(figures, options.quick);
    }
    let mut columns = Vec::new();
    for &backend in &options.backends {
        eprintln!("bench: {backend:?} backend...");
        columns.push((backend, measure(backend, options.quick)?));
    }
    print_table(&python.unwrap_or_default(), &columns);
    Ok(())
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        quick: false,
        backends: vec![BackendKind::Thread],
        python: Some(PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/bench/python_baseline.py"))),
    };
    if BackendKind::Native.is_available() {
        options.backends.push(BackendKind::Native);
    }
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--backend" => options.backends = vec![args.next().unwrap_or_default().parse().map_err(anyhow::Error::msg)?],
            "--python" => {
                options.python = match args.next().as_deref() {
                    Some("none") | None => None,
                    Some(path) => Some(PathBuf::from(path)),
                }
            }
            other => anyhow::bail!("unknown argument `{other}` (use --quick, --backend NAME, --python PATH|none)"),
        }
    }
    Ok(options)
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

fn measure(backend: BackendKind, quick: bool) -> anyhow::Result<Vec<(String, Figure)>> {
    let scale = if quick { 0.2 } else { 1.0 };
    let scaled = |n: f64| ((n * scale) as usize).max(10);
    let host = Host::builder().backend(backend).build()?;
    let program = host.load(concat!(env!("GUESTS_DIR"), "/children.wasm"))?;
    let mut figures = Vec::new();
    let mut record = |name: &str, value: f64, higher_is_better: bool| {
        eprintln!("bench:   {name}: {value:.1}");
        figures.push((name.to_string(), Figure { value, higher_is_better }));
    };

    // Warm up: the first start pays for lazily built state.
    spawn(&program, "noop", &())?.join()?;

    let n = scaled(500.0);
    let start = Instant::now();
    for _ in 0..n {
        spawn(&program, "noop", &())?.join()?;
    }
    record("W1-spawn-join-seq", micros(start.elapsed()) / n as f64, false);

    let n = scaled(1000.0);
    let start = Instant::now();
    let processes = (0..n).map(|_| spawn(&program, "noop", &())).collect::<Result<Vec<_>, _>>()?;
    for process in &processes {
        process.join()?;
    }
    record("W2-spawn-join-batch", micros(start.elapsed()) / n as f64, false);

    let n = scaled(1000.0);
    record("W3-concurrent-sleep-1s", sleepers(&program, n)?.as_secs_f64(), false);
    if backend == BackendKind::Thread {
        record("W3-concurrent-sleep-1s-x10000", sleepers(&program, scaled(10_000.0))?.as_secs_f64(), false);
    }

    record("W4-terminate-spin", terminate_latency(&program, "spin")?, false);
    record("W4-terminate-sleeper", terminate_latency(&program, "sleep_forever")?, false);

    let squares = host.load(concat!(env!("GUESTS_DIR"), "/pool-square.wasm"))?;
    let pool = host::Pool::new(&squares, 2)?;
    // Warm up: both workers running.
    let _: Vec<i64> = pool.map("square", 0..100)?;
    let n = scaled(100_000.0);
    let start = Instant::now();
    let results: Vec<i64> = pool.map("square", 0..n as i64)?;
    anyhow::ensure!(results.len() == n, "map lost results");
    record("W5-pool-map", n as f64 / start.elapsed().as_secs_f64(), true);

    let n = scaled(10_000.0);
    let start = Instant::now();
    let pending: Vec<host::AsyncResult<i64>> = (0..n as i64).map(|i| pool.apply_async("square", &i)).collect();
    for result in &pending {
        result.get(None)?;
    }
    record("W6-pool-apply-async", n as f64 / start.elapsed().as_secs_f64(), true);
    drop(pool);

    record("W7-rss-per-idle-process", idle_memory(&program, backend, scaled(200.0))?, false);

    let queue_program = host.load(concat!(env!("GUESTS_DIR"), "/ipc-queue-throughput.wasm"))?;
    record("W8-queue-throughput", queue_throughput(&host, &queue_program, scaled(100_000.0))?, true);

    // Only the native backend forks.
    if backend == BackendKind::Native {
        let fork_program = host.load(concat!(env!("GUESTS_DIR"), "/fork.wasm"))?;
        record("W9-fork-join-16MiB", fork_join(&fork_program, scaled(100.0))?, false);
    }
    let n = scaled(QUEUE_BYTES_ITEMS as f64);
    record(QUEUE_BYTES, queue_bytes_throughput(&host, &queue_program, n)?, true);
    Ok(figures)
}

/// W9: microseconds per `mp::fork()` + join of a guest with 16 MiB of
/// linear memory in use (measured by the guest itself, `fork bench N`).
fn fork_join(program: &Program, n: usize) -> anyhow::Result<f64> {
    let capture = host::Capture::new();
    let process =
        program.command().args(["bench".to_string(), n.to_string()]).stdout(host::Stdio::capture(&capture)).spawn()?;
    anyhow::ensure!(process.join()?.code() == 0, "the fork bench failed: {:?}", process.failure());
    let text = capture.text();
    let micros = text.lines().find_map(|line| line.strip_prefix("us-per-fork: ")).and_then(|v| v.parse().ok());
    micros.ok_or_else(|| anyhow::anyhow!("no figure from the fork bench: {text}"))
}

/// Python's W9: `os.fork()` + `os.waitpid` of a process with a 16 MiB
/// bytearray, its child ending at once with `os._exit(0)` (microseconds).
fn python_fork_join(n: usize) -> anyhow::Result<f64> {
    let script = r"
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
    let output = std::process::Command::new("python3").args(["-c", script, &n.to_string()]).output()?;
    anyhow::ensure!(output.status.success(), "python3: {}", String::from_utf8_lossy(&output.stderr));
    Ok(String::from_utf8_lossy(&output.stdout).trim().parse()?)
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

fn print_table(python: &HashMap<String, f64>, columns: &[(BackendKind, Vec<(String, Figure)>)]) {
    let mut header = format!("| {:<32} | {:>14} |", "workload", "python fork");
    for (backend, _) in columns {
        header += &format!(" {:>14} | {:>8} |", format!("{backend:?}").to_lowercase(), "ratio");
    }
    println!("{header}");
    println!("|{}", "---|".repeat(2 + 2 * columns.len()));
    let mut names: Vec<&String> = columns.iter().flat_map(|(_, figures)| figures.iter().map(|(n, _)| n)).collect();
    names.dedup();
    let mut seen = Vec::new();
    for name in names {
        if seen.contains(&name) {
            continue;
        }
        seen.push(name);
        let base = python.get(name.trim_end_matches("-x10000")).copied();
        let mut row = format!("| {:<32} | {:>14} |", name, base.map_or("-".into(), |v| format!("{v:.1}")));
        for (_, figures) in columns {
            match figures.iter().find(|(n, _)| n == name) {
                Some((_, figure)) => {
                    let ratio = base.map(|b| if figure.higher_is_better { figure.value / b } else { b / figure.value });
                    row += &format!(
                        " {:>14.1} | {:>8} |",
                        figure.value,
                        ratio.map_or("-".into(), |r| format!("{r:.1}x"))
                    );
                }
                None => row += &format!(" {:>14} | {:>8} |", "-", "-"),
            }
        }
        println!("{row}");
    }
    println!();
    println!("ratio: how many times better than Python (fork) in the same run; W1/W2 in us/process,");
    println!("W3 in s wall, W4 in us median, W5 in items/s, W6 in tasks/s, W7 in KiB/process, W8 in messages/s,");
    println!("W9 in us per fork + join of a process with 16 MiB in use (native only; Python: os.fork + waitpid).");
    println!("{QUEUE_BYTES} in MB/s of 1 MiB byte items between two processes (Python's measured by an inline script).");
}

/// The workload of 1 MiB byte items through a `Queue` between two processes.
const QUEUE_BYTES: &str = "W8b-queue-1MiB-items";
/// How many items it sends (before `--quick` scales it).
const QUEUE_BYTES_ITEMS: usize = 200;
/// Each item's size.
const QUEUE_BYTES_SIZE: usize = 1 << 20;
/// The queue's bound, the same on both sides: a producer faster than its
/// consumer waits rather than parks every item in the host.
const QUEUE_BYTES_BOUND: u32 = 16;

/// MB/s of `n` byte items of [`QUEUE_BYTES_SIZE`] through a bounded `Queue`
/// from one process to another, from the first start to the last end.
fn queue_bytes_throughput(host: &Host, program: &Program, n: usize) -> anyhow::Result<f64> {
    let queue = host::sync::Queue::new(host, QUEUE_BYTES_BOUND)?;
    let args = (&queue, n as u64, QUEUE_BYTES_SIZE as u64);
    let start = Instant::now();
    let consumer = program.command().entry("consume_bytes").input(&args).stdout(host::Stdio::null()).spawn()?;
    let producer = program.command().entry("produce_bytes").input(&args).spawn()?;
    anyhow::ensure!(producer.join()?.success() && consumer.join()?.success(), "the byte-queue processes failed");
    Ok((n * QUEUE_BYTES_SIZE) as f64 / start.elapsed().as_secs_f64() / 1e6)
}

/// Python's figure for [`QUEUE_BYTES`] (`shared/bench/python_baseline.py`
/// has none): the same two processes, fork start method, measured now.
fn queue_bytes_python(figures: &mut HashMap<String, f64>, quick: bool) {
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
    let n = if quick { QUEUE_BYTES_ITEMS / 5 } else { QUEUE_BYTES_ITEMS };
    eprintln!("bench: python multiprocessing (fork), {QUEUE_BYTES}...");
    let output = std::process::Command::new("python3")
        .args(["-c", SCRIPT, &n.to_string(), &QUEUE_BYTES_SIZE.to_string(), &QUEUE_BYTES_BOUND.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output();
    match output.ok().and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok()) {
        Some(value) => {
            figures.insert(QUEUE_BYTES.to_string(), value);
        }
        None => eprintln!("bench: python gave no figure for {QUEUE_BYTES}"),
    }
}
