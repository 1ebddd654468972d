//! Key rotation without downtime, end to end with real processes: a primary and a sync
//! follower as `logship node` children on 127.0.0.1 (tests/common/cluster.rs), both with client
//! authentication (`[clients]`), each with its own cluster key file and client keys file. A
//! client appends without pause at `remote_durable` while the cluster key and the client's key
//! are rotated through the three steps of docs/operations.md, each step a rewrite of every
//! node's files and a SIGHUP; the follower is SIGKILLed and restarted in the middle of the
//! overlap (and once more at the end), so replication sessions are established under mixed
//! rings, and the client switches to its new key by reconnecting. No append may fail, and every
//! acknowledged LSN must read back, with its payload, from both nodes. Then strangers are
//! refused with their typed errors.
//!
//! Run: `cargo test --test key_rotation`.

#[path = "common/cluster.rs"]
mod cluster;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cluster::{signal, wait_until, Cluster, FollowerSpec, Spec, PRIMARY};
use logship::replication::node::generate_key_text;
use logship::replication::protocol::auth::ClusterKey;
use logship::replication::protocol::client_auth::{ClientKey, ClientRefusal};
use logship::replication::Error;
use logship::{Bytes, Client, DurabilityLevel, Lsn};

/// The follower.
const FOLLOWER: &str = "a";
/// Bound on a reload, a restart, a follower catching up.
const BOUND: Duration = Duration::from_secs(15);
/// Appends acknowledged between steps, at least.
const ACKS_PER_STEP: u64 = 30;
/// Commit timeout: longer than a follower's restart, so appends wait through it.
const COMMIT_MS: u64 = 10_000;

fn key() -> String {
    generate_key_text().expect("random key")
}

fn client_key(name: &str, text: &str) -> ClientKey {
    ClientKey::new(name, ClusterKey::from_bytes(text.as_bytes()).expect("long")).expect("name")
}

/// The rings and client lines every node holds at one step.
struct Keys {
    cluster: Vec<String>,
    loader: Vec<String>,
}

/// The test's fixed clients: `checker` (reads for the final check and status), `appender`
/// (append only), and the loader's keys of this step.
struct Clients {
    checker: String,
    appender: String,
}

impl Clients {
    fn file(&self, keys: &Keys) -> String {
        let mut text = format!(
            "# rotated by the test\nchecker read {}\nappender append {}\n",
            self.checker, self.appender
        );
        for k in &keys.loader {
            text.push_str(&format!("loader append,read {k}\n"));
        }
        text
    }
}

fn cluster_key_file(c: &Cluster, node: &str) -> PathBuf {
    let name = if node == PRIMARY {
        "cluster.key".to_string()
    } else {
        format!("{node}-own.key")
    };
    c.dir.path().join(name)
}

fn clients_file(c: &Cluster, node: &str) -> PathBuf {
    c.dir.path().join(format!("clients-{node}.keys"))
}

/// Writes `node`'s two key files for `keys`.
fn write_keys(c: &Cluster, node: &str, keys: &Keys, clients: &Clients) {
    let ring: String = keys.cluster.iter().map(|k| format!("{k}\n")).collect();
    std::fs::write(cluster_key_file(c, node), format!("# ring\n{ring}")).expect("key file");
    std::fs::write(clients_file(c, node), clients.file(keys)).expect("clients file");
}

/// Times `node` logged a successful reload.
fn reloads(c: &Cluster, node: &str) -> usize {
    let log = std::fs::read_to_string(&c.node(node).log).unwrap_or_default();
    log.matches("SIGHUP: keys reloaded").count()
}

/// One step on `node`: its files rewritten, SIGHUP, and the reload seen in its log.
fn step(c: &Cluster, node: &str, keys: &Keys, clients: &Clients) {
    write_keys(c, node, keys, clients);
    let before = reloads(c, node);
    signal(c.pid(node), "-HUP");
    wait_until(&format!("{node} reloading its keys"), BOUND, || {
        reloads(c, node) > before
    });
}

/// Replication sessions the primary established with the follower.
fn sessions(c: &Cluster) -> u64 {
    let p = c.primary_status();
    p.followers[0].counters.sessions
}

/// SIGKILLs the follower and starts it again (it reads its key files at start); waits until
/// the primary streams to it in a new session.
fn restart_follower(c: &mut Cluster) {
    let before = sessions(c);
    c.kill(FOLLOWER);
    c.spawn(FOLLOWER);
    c.wait_up(FOLLOWER);
    wait_until("a new replication session", BOUND, || {
        c.status(PRIMARY)
            .ok()
            .and_then(|s| s.primary)
            .is_some_and(|p| p.followers[0].healthy && p.followers[0].counters.sessions > before)
    });
}

/// Every acknowledged append (LSN, payload), and every failure, of the loader.
type LoadOutcome = (Vec<(Lsn, Bytes)>, Vec<String>);

/// The client appending at `remote_durable` without pause; it reconnects with the key in
/// `key` whenever `generation` moves.
struct Loader {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    key: Arc<Mutex<ClientKey>>,
    generation: Arc<AtomicU64>,
    thread: Option<JoinHandle<LoadOutcome>>,
}

impl Loader {
    fn start(addr: std::net::SocketAddr, key: ClientKey) -> Loader {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let key = Arc::new(Mutex::new(key));
        let generation = Arc::new(AtomicU64::new(0));
        let (s, a, k, g) = (stop.clone(), acked.clone(), key.clone(), generation.clone());
        let thread = std::thread::spawn(move || load(addr, &s, &a, (&k, &g)));
        Loader {
            stop,
            acked,
            key,
            generation,
            thread: Some(thread),
        }
    }

    /// Waits for `n` more acknowledged appends.
    fn wait_acks(&self, n: u64) {
        let target = self.acked.load(Ordering::Acquire) + n;
        wait_until("appends acknowledged", BOUND, || {
            self.acked.load(Ordering::Acquire) >= target
        });
    }

    /// The loader reconnects with `key` before its next append.
    fn switch_key(&self, key: ClientKey) {
        *self.key.lock().expect("key") = key;
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn finish(mut self) -> LoadOutcome {
        self.stop.store(true, Ordering::Release);
        let t = self.thread.take().expect("running");
        t.join().expect("the loader panicked")
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// The loader's loop: every acknowledged append (LSN, payload), and every failure.
fn load(
    addr: std::net::SocketAddr,
    stop: &AtomicBool,
    acked: &AtomicU64,
    (key, generation): (&Mutex<ClientKey>, &AtomicU64),
) -> LoadOutcome {
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    let mut client: Option<(Client, u64)> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Acquire) {
        let now = generation.load(Ordering::Acquire);
        if client.as_ref().is_none_or(|(_, g)| *g != now) {
            let k = key.lock().expect("key").clone();
            match Client::connect_with_key(addr, BOUND, &k) {
                Ok(c) => client = Some((c, now)),
                Err(e) => {
                    failed.push(format!("connect as {}: {e}", k.name()));
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            }
        }
        let (c, _) = client.as_mut().expect("connected");
        n += 1;
        let payload = Bytes::from(format!("rotation-{n}"));
        match c.append(payload.clone(), DurabilityLevel::RemoteDurable) {
            Ok(lsn) => {
                ok.push((lsn, payload));
                acked.fetch_add(1, Ordering::AcqRel);
            }
            Err(e) => {
                failed.push(format!("append {n}: {e}"));
                client = None;
            }
        }
    }
    (ok, failed)
}

fn refusal(r: Result<Client, Error>) -> Option<ClientRefusal> {
    match r {
        Err(Error::Refused { code, .. }) => Some(code),
        _ => None,
    }
}

#[test]
fn cluster_and_client_keys_rotate_under_load_with_no_failed_append() {
    let started = Instant::now();
    let spec = Spec::new(
        "ANY 1 (a)",
        vec![FollowerSpec::sync(FOLLOWER).with_own_key()],
    );
    let mut c = Cluster::new(&spec);
    c.commit_ms = COMMIT_MS;
    let (old, new) = (key(), key());
    let (old_loader, new_loader) = (key(), key());
    let clients = Clients {
        checker: key(),
        appender: key(),
    };
    let start_keys = Keys {
        cluster: vec![old.clone()],
        loader: vec![old_loader.clone()],
    };
    for node in [PRIMARY, FOLLOWER] {
        write_keys(&c, node, &start_keys, &clients);
        let table = format!("[clients]\nkeys_file = \"clients-{node}.keys\"");
        c.add_config(node, &table);
    }
    c.client_key = Some(client_key("checker", &clients.checker));
    c.start_all();
    c.wait_healthy(BOUND);
    let addr = c.node(PRIMARY).client;
    let loader = Loader::start(addr, client_key("loader", &old_loader));
    loader.wait_acks(ACKS_PER_STEP);

    // Step 1: the new keys accepted everywhere, the old ones still proving.
    let overlap_old_first = Keys {
        cluster: vec![old.clone(), new.clone()],
        loader: vec![old_loader.clone(), new_loader.clone()],
    };
    for node in [FOLLOWER, PRIMARY] {
        step(&c, node, &overlap_old_first, &clients);
    }
    loader.wait_acks(ACKS_PER_STEP);

    // Step 2: the new keys prove. Between the follower's reload and the primary's, the
    // follower proves with the new key and the primary with the old: a new session then must
    // be accepted by both rings.
    let overlap_new_first = Keys {
        cluster: vec![new.clone(), old.clone()],
        loader: vec![new_loader.clone(), old_loader.clone()],
    };
    step(&c, FOLLOWER, &overlap_new_first, &clients);
    restart_follower(&mut c);
    loader.wait_acks(ACKS_PER_STEP);
    step(&c, PRIMARY, &overlap_new_first, &clients);
    loader.switch_key(client_key("loader", &new_loader));
    loader.wait_acks(ACKS_PER_STEP);

    // Step 3: the old keys removed; a new session under the new key alone.
    let done = Keys {
        cluster: vec![new.clone()],
        loader: vec![new_loader.clone()],
    };
    for node in [FOLLOWER, PRIMARY] {
        step(&c, node, &done, &clients);
    }
    restart_follower(&mut c);
    loader.wait_acks(ACKS_PER_STEP);
    let (acked, failed) = loader.finish();
    assert_eq!(failed, Vec::<String>::new(), "no append failed");
    assert!(
        acked.len() as u64 >= 5 * ACKS_PER_STEP,
        "{} acked",
        acked.len()
    );

    // Every acknowledged LSN reads back, with its payload, from both nodes.
    let last = acked.iter().map(|(l, _)| *l).max().expect("acked");
    wait_until(
        "the follower holding every acknowledged record",
        BOUND,
        || c.status(FOLLOWER).is_ok_and(|s| s.durable_lsn >= last.0),
    );
    for node in [PRIMARY, FOLLOWER] {
        let held: std::collections::BTreeMap<Lsn, Bytes> = (c.records(node).into_iter())
            .map(|r| (r.lsn, r.payload))
            .collect();
        for (lsn, payload) in &acked {
            assert_eq!(held.get(lsn), Some(payload), "{node} at {lsn}");
        }
    }

    // Strangers: the old loader key, a wrong key, an unknown name; a client without `read`.
    let connect = |name: &str, k: &str| Client::connect_with_key(addr, BOUND, &client_key(name, k));
    assert_eq!(
        refusal(connect("loader", &old_loader)),
        Some(ClientRefusal::AuthFailed)
    );
    assert_eq!(
        refusal(connect("loader", &key())),
        Some(ClientRefusal::AuthFailed)
    );
    assert_eq!(
        refusal(connect("nobody", &new_loader)),
        Some(ClientRefusal::AuthFailed)
    );
    let mut appender = connect("appender", &clients.appender).expect("admitted");
    match appender.read(Lsn::ZERO, 4096) {
        Err(Error::Remote { status, .. }) => assert_eq!(status, "not_permitted"),
        other => panic!("a read without the read grant: {other:?}"),
    }
    appender
        .append(
            Bytes::from_static(b"still usable"),
            DurabilityLevel::RemoteDurable,
        )
        .expect("the connection goes on after not_permitted");
    let refused = c.status(PRIMARY).expect("status").client_handshakes_refused;
    assert!(refused >= 3, "refusals counted: {refused}");
    println!("key rotation: {:.1} s", started.elapsed().as_secs_f64());
}
