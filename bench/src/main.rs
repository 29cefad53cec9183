//! `manifold-bench`: Manifold's plugins against Debian's reference plugins,
//! measured in one run, every call a real process exec with the CNI
//! environment and stdin as a runtime makes it. Prints medians, ratios, peak
//! RSS (the plugin process's own, from `wait4`) and the issues' targets.
//!
//! Usage (root): `cargo build --release --bins && target/release/manifold-bench [macvlan|ipam|meta|all] [--cycles N]`.

mod ipam;
mod macvlan;
mod measure;
mod meta;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cycles: usize = args
        .iter()
        .skip_while(|a| *a != "--cycles")
        .nth(1)
        .map(|s| s.parse().expect("--cycles N"))
        .unwrap_or(30);
    let which = args
        .first()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .unwrap_or("all");
    measure::sweep_stale_namespaces();
    println!(
        "manifold-bench {} on {} cores, {}",
        which,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    match which {
        "macvlan" => macvlan::bench(cycles),
        "ipam" => ipam::bench(cycles),
        "meta" => meta::bench(cycles),
        "all" => {
            macvlan::bench(cycles);
            println!();
            ipam::bench(cycles);
            println!();
            meta::bench(cycles);
        }
        other => {
            eprintln!("unknown benchmark {other:?}: macvlan, ipam, meta or all");
            std::process::exit(2);
        }
    }
}
