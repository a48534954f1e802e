//! Differential test: one scripted sequence of ~100 mixed etcdctl operations (puts,
//! overwrites, deletes, txns, reads at old revisions, sorted and limited ranges, compactions
//! midway) runs against a fresh etcd and a fresh cairn; every stdout, stderr and exit status
//! must be identical after masking cluster/member ids, raft terms and db sizes. A mismatch
//! panics with a step-by-step diff (`-` etcd, `+` cairn).

use cairn_tests::{differential, Transcript};

/// A small deterministic generator (xorshift64*), so the script is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const KEYS: &[&str] = &[
    "a",
    "b",
    "c",
    "dir/1",
    "dir/2",
    "dir/3",
    "dir/sub/x",
    "e",
    "zz",
];
const FORMATS: &[&str] = &["simple", "json", "fields"];
const SORTS: &[&str] = &["KEY", "CREATE", "MODIFY", "VALUE", "VERSION"];
const ORDERS: &[&str] = &["ASCEND", "DESCEND"];

/// One scripted step: etcdctl arguments and optional stdin.
type Step = (Vec<String>, Option<String>);

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// The script: ~100 steps from a fixed seed, with fixed compaction points.
fn script() -> Vec<Step> {
    let mut rng = Rng(0x00C0_FFEE_D15E_A5E5);
    let mut steps: Vec<Step> = Vec::new();
    for i in 0..100u64 {
        // Fixed checkpoints: compactions midway, and reads around them.
        match i {
            45 => {
                steps.push((args(&["compaction", "15"]), None));
                steps.push((args(&["get", "a", "--rev=14"]), None));
                steps.push((
                    args(&["get", "", "--from-key", "--rev=15", "-w", "json"]),
                    None,
                ));
                continue;
            }
            80 => {
                steps.push((args(&["compaction", "33", "--physical"]), None));
                steps.push((args(&["compaction", "25"]), None));
                steps.push((args(&["get", "dir/", "--prefix", "--rev=32"]), None));
                continue;
            }
            _ => {}
        }
        let key = rng.pick(KEYS);
        let value = format!("v{i}");
        let step: Step = match rng.below(100) {
            // put / overwrite
            0..=34 => {
                let mut a = args(&["put", key, &value]);
                if rng.chance(40) {
                    a.push("--prev-kv".into());
                }
                if rng.chance(30) {
                    a.push(format!("-w={}", rng.pick(FORMATS)));
                }
                (a, None)
            }
            // put with the value on stdin, or keeping the value
            35..=38 => {
                if rng.chance(50) {
                    (args(&["put", key]), Some(format!("stdin {value}")))
                } else {
                    (args(&["put", key, "--ignore-value"]), None)
                }
            }
            // get a key
            39..=46 => {
                let mut a = args(&["get", key, &format!("-w={}", rng.pick(FORMATS))]);
                if rng.chance(30) {
                    a.push("--consistency=s".into());
                }
                (a, None)
            }
            // sorted, limited ranges
            47..=56 => {
                let mut a = if rng.chance(50) {
                    args(&["get", "dir/", "--prefix"])
                } else {
                    args(&["get", rng.pick(KEYS), "--from-key"])
                };
                a.push(format!("--sort-by={}", rng.pick(SORTS)));
                a.push(format!("--order={}", rng.pick(ORDERS)));
                if rng.chance(60) {
                    a.push(format!("--limit={}", rng.below(4)));
                }
                if rng.chance(40) {
                    a.push("--keys-only".into());
                } else {
                    a.push(format!("-w={}", rng.pick(FORMATS)));
                }
                (a, None)
            }
            // reads at old revisions (some compacted, some in the future)
            57..=64 => {
                let rev = rng.below(i + 2);
                let mut a = if rng.chance(50) {
                    args(&["get", key])
                } else {
                    args(&["get", "", "--from-key"])
                };
                a.push(format!("--rev={rev}"));
                if rng.chance(50) {
                    a.push("-w=json".into());
                }
                (a, None)
            }
            // deletes: a key, a prefix, a range, from a key
            65..=74 => {
                let mut a = match rng.below(4) {
                    0 | 1 => args(&["del", key]),
                    2 => args(&["del", "dir/", "--prefix"]),
                    _ => args(&["del", key, rng.pick(KEYS)]),
                };
                if rng.chance(50) {
                    a.push("--prev-kv".into());
                }
                if rng.chance(30) {
                    a.push(format!("-w={}", rng.pick(FORMATS)));
                }
                (a, None)
            }
            // txns on value, version, create and mod
            75..=94 => {
                let other = rng.pick(KEYS);
                let cmp = match rng.below(4) {
                    0 => format!("value(\"{key}\") = \"v{}\"", rng.below(i + 1)),
                    1 => format!("version(\"{key}\") > \"{}\"", rng.below(3)),
                    2 => format!("create(\"{key}\") != \"0\""),
                    _ => format!("mod(\"{key}\") < \"{}\"", rng.below(2 * i + 2)),
                };
                let success = match rng.below(3) {
                    0 => format!("put {other} t{i}\nget {key}"),
                    1 => format!("del {other}\nget dir/ --prefix"),
                    _ => format!("put {other} t{i} --prev-kv\nput {key}x s{i}"),
                };
                let failure = if rng.chance(50) {
                    format!("get {other}\nput fail/{i} f")
                } else {
                    String::new()
                };
                let mut a = args(&["txn"]);
                if rng.chance(30) {
                    a.push(format!("-w={}", rng.pick(FORMATS)));
                }
                (a, Some(format!("{cmp}\n\n{success}\n\n{failure}\n\n")))
            }
            // compactions that must fail: the past, the future
            95..=96 => (args(&["compaction", &format!("{}", 1000 + i)]), None),
            // a full dump
            _ => (args(&["get", "", "--from-key", "-w=json"]), None),
        };
        steps.push(step);
    }
    steps.push((args(&["get", "", "--from-key", "-w=json"]), None));
    steps.push((
        args(&["get", "", "--from-key", "--rev=34", "-w=json"]),
        None,
    ));
    steps.push((args(&["endpoint", "status", "-w=json"]), None));
    steps
}

fn run_script(t: &mut Transcript<'_>) {
    for (a, stdin) in script() {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        match stdin {
            Some(s) => t.run_stdin(&a, &s),
            None => t.run(&a),
        };
    }
    // The script is only useful if it reached its compactions and wrote plenty: check that
    // on both servers (and so that etcd really did it).
    let find = |t: &Transcript<'_>, cmd: &str| t.runs.iter().find(|r| r.cmd == cmd).cloned();
    for (cmd, out) in [
        ("compaction 15", "compacted revision 15\n"),
        ("compaction 33 --physical", "compacted revision 33\n"),
    ] {
        let r = find(t, cmd).expect("the script has this step");
        t.check(r.code == 0 && r.stdout == out, &r, out);
    }
    let r = find(t, "compaction 25").expect("the script has this step");
    t.check(
        r.code == 1
            && r.last_err_line() == "Error: etcdserver: mvcc: required revision has been compacted",
        &r,
        "a compacted error",
    );
    let last = t.run(&["get", "", "--from-key", "--keys-only", "-w", "json"]);
    let count = t.runs.iter().filter(|r| r.code == 0).count();
    t.check(
        last.stdout.contains("\"revision\": ") && count > 80,
        &last,
        "more than 80 successful steps",
    );
}

#[test]
fn scripted_sequence_matches_etcd() {
    let steps = script();
    assert!((100..=110).contains(&steps.len()), "{} steps", steps.len());
    differential(&[], run_script);
}
