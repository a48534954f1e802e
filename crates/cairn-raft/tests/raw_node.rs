//! `DiskStorage` driven by a real raft-rs `RawNode`: election, proposals, compaction, restart,
//! and a learner catching up through a snapshot (so `snapshot()` and
//! `apply_snapshot_metadata` are exercised the way the Ready loop will).

use std::collections::VecDeque;
use std::path::Path;

use cairn_raft::storage::{DiskStorage, WalOptions};
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, ConfState, Entry, EntryType, Message};
use raft::{Config, RawNode, StateRole, Storage};

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

fn opts() -> WalOptions {
    WalOptions {
        segment_size: 1024,
        max_wals: 1,
    }
}

struct Node {
    rn: RawNode<DiskStorage>,
    storage: DiskStorage,
    applied: u64,
    /// Normal entries applied, as (index, data).
    data: Vec<(u64, Vec<u8>)>,
}

impl Node {
    fn new(id: u64, dir: &Path, bootstrap: Option<ConfState>) -> Node {
        let (storage, fresh) = DiskStorage::open(dir, opts()).unwrap();
        if let Some(cs) = bootstrap {
            assert!(fresh);
            storage.bootstrap(cs).unwrap();
        }
        Node::start(id, storage, 0)
    }

    fn start(id: u64, storage: DiskStorage, applied: u64) -> Node {
        let cfg = Config {
            id,
            election_tick: 10,
            heartbeat_tick: 1,
            applied,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            ..Default::default()
        };
        cfg.validate().unwrap();
        let rn = RawNode::new(&cfg, storage.clone(), &logger()).unwrap();
        Node {
            rn,
            storage,
            applied,
            data: Vec::new(),
        }
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        for e in entries {
            self.applied = e.index;
            match e.get_entry_type() {
                EntryType::EntryConfChange => {
                    let cc = ConfChange::parse_from_bytes(&e.data).unwrap();
                    let cs = self.rn.apply_conf_change(&cc).unwrap();
                    self.storage.set_conf_state(&cs).unwrap();
                }
                EntryType::EntryNormal if !e.data.is_empty() => {
                    self.data.push((e.index, e.data.to_vec()));
                }
                _ => {}
            }
        }
    }

    /// One pass of the Ready loop (RAFT-NOTES §1). Returns messages to deliver.
    fn on_ready(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        if !self.rn.has_ready() {
            return out;
        }
        let mut rd = self.rn.ready();
        out.extend(rd.take_messages());
        if !rd.snapshot().is_empty() {
            let meta = rd.snapshot().get_metadata().clone();
            self.storage.apply_snapshot_metadata(&meta).unwrap();
            self.applied = meta.index;
        }
        let committed = rd.take_committed_entries();
        self.apply(committed);
        self.storage.append(rd.entries()).unwrap();
        if let Some(hs) = rd.hs() {
            self.storage.set_hard_state(hs).unwrap();
        }
        if rd.must_sync() {
            self.storage.sync().unwrap();
        }
        out.extend(rd.take_persisted_messages());
        let mut light = self.rn.advance(rd);
        if let Some(commit) = light.commit_index() {
            let mut hs = self.storage.hard_state();
            hs.commit = commit;
            self.storage.set_hard_state(&hs).unwrap();
            self.storage.sync().unwrap();
        }
        out.extend(light.take_messages());
        self.apply(light.take_committed_entries());
        self.rn.advance_apply();
        out
    }

    /// Leader side: offer snapshots at `applied` and compact the log to it.
    fn snapshot_and_compact(&mut self) {
        let index = self.applied;
        self.storage.set_prepared_snapshot(index);
        self.storage.compact(index).unwrap();
    }
}

/// Delivers messages between `nodes` (ids 1..=n) until nothing moves.
fn pump(nodes: &mut [Option<Node>]) {
    let mut queue: VecDeque<Message> = VecDeque::new();
    for _ in 0..1000 {
        for n in nodes.iter_mut().flatten() {
            queue.extend(n.on_ready());
        }
        if queue.is_empty() {
            return;
        }
        while let Some(m) = queue.pop_front() {
            if let Some(Some(n)) = nodes.get_mut(m.to as usize - 1) {
                let _ = n.rn.step(m);
            }
        }
    }
    panic!("cluster did not settle");
}

fn propose(nodes: &mut [Option<Node>], leader: usize, count: usize, tag: &str) {
    for i in 0..count {
        let data = format!("{tag}-{i}").into_bytes();
        nodes[leader]
            .as_mut()
            .unwrap()
            .rn
            .propose(vec![], data)
            .unwrap();
        pump(nodes);
    }
}

#[test]
fn single_node_restart_keeps_log_and_state() {
    let dir = tempfile::tempdir().unwrap();
    let cs = ConfState {
        voters: vec![1],
        ..Default::default()
    };
    let mut nodes = vec![Some(Node::new(1, dir.path(), Some(cs.clone())))];
    nodes[0].as_mut().unwrap().rn.campaign().unwrap();
    pump(&mut nodes);
    assert_eq!(nodes[0].as_ref().unwrap().rn.raft.state, StateRole::Leader);
    propose(&mut nodes, 0, 60, "a");
    let n = nodes[0].as_mut().unwrap();
    assert_eq!(n.data.len(), 60);
    let applied = n.applied;
    let segments_before = n.storage.wal_segments().len();
    assert!(segments_before > 1);
    n.snapshot_and_compact();
    assert!(n.storage.wal_segments().len() < segments_before);
    let term = n.rn.raft.term;
    let hs_before = n.storage.hard_state();
    nodes.clear();

    // Restart: raft's invariants hold and the node carries on from where it was.
    let (storage, fresh) = DiskStorage::open(dir.path(), opts()).unwrap();
    assert!(!fresh);
    assert_eq!(storage.hard_state(), hs_before);
    assert_eq!(storage.first_index().unwrap(), applied + 1);
    assert_eq!(storage.last_index().unwrap(), applied);
    let mut nodes = vec![Some(Node::start(1, storage, applied))];
    for _ in 0..30 {
        nodes[0].as_mut().unwrap().rn.tick();
        pump(&mut nodes);
    }
    let n = nodes[0].as_ref().unwrap();
    assert_eq!(n.rn.raft.state, StateRole::Leader);
    assert!(n.rn.raft.term > term);
    propose(&mut nodes, 0, 5, "b");
    let n = nodes[0].as_ref().unwrap();
    assert_eq!(n.data.len(), 5);
    assert_eq!(n.applied, n.storage.last_index().unwrap());
}

#[test]
fn learner_catches_up_through_a_snapshot_and_restarts() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let cs = ConfState {
        voters: vec![1],
        ..Default::default()
    };
    let mut nodes = vec![Some(Node::new(1, d1.path(), Some(cs))), None];
    nodes[0].as_mut().unwrap().rn.campaign().unwrap();
    pump(&mut nodes);

    // Add node 2 as a learner while it is not running yet, write more, then snapshot and
    // compact so that node 2 can only catch up through the snapshot.
    let mut cc = ConfChange::default();
    cc.set_change_type(ConfChangeType::AddLearnerNode);
    cc.node_id = 2;
    nodes[0]
        .as_mut()
        .unwrap()
        .rn
        .propose_conf_change(vec![], cc)
        .unwrap();
    pump(&mut nodes);
    propose(&mut nodes, 0, 20, "x");
    nodes[0].as_mut().unwrap().snapshot_and_compact();
    let snap_index = nodes[0].as_ref().unwrap().applied;
    propose(&mut nodes, 0, 3, "y");

    nodes[1] = Some(Node::new(2, d2.path(), None));
    for _ in 0..5 {
        nodes[0].as_mut().unwrap().rn.tick();
        pump(&mut nodes);
    }
    // Report the snapshot as delivered so the leader resumes normal replication.
    nodes[0]
        .as_mut()
        .unwrap()
        .rn
        .report_snapshot(2, raft::SnapshotStatus::Finish);
    for _ in 0..5 {
        nodes[0].as_mut().unwrap().rn.tick();
        pump(&mut nodes);
    }
    {
        let l = nodes[0].as_ref().unwrap();
        let f = nodes[1].as_ref().unwrap();
        assert_eq!(f.storage.truncated().0, snap_index);
        assert_eq!(f.storage.first_index().unwrap(), snap_index + 1);
        assert_eq!(
            f.storage.last_index().unwrap(),
            l.storage.last_index().unwrap()
        );
        assert_eq!(f.storage.conf_state(), l.storage.conf_state());
        assert_eq!(f.data, l.data[l.data.len() - 3..].to_vec());
        assert!(f.storage.hard_state().commit >= snap_index);
    }
    let applied2 = nodes[1].as_ref().unwrap().applied;
    let last = nodes[0].as_ref().unwrap().storage.last_index().unwrap();
    nodes[1] = None;

    // Restart the learner from its WAL.
    let (s2, fresh) = DiskStorage::open(d2.path(), opts()).unwrap();
    assert!(!fresh);
    assert_eq!(s2.truncated().0, snap_index);
    assert_eq!(s2.last_index().unwrap(), last);
    nodes[1] = Some(Node::start(2, s2, applied2));
    propose(&mut nodes, 0, 2, "z");
    let f = nodes[1].as_ref().unwrap();
    assert_eq!(f.storage.last_index().unwrap(), last + 2);
    assert_eq!(f.applied, last + 2);
}

/// The leader keeps no entry in memory (cache budget 0) and uses small append messages, so a
/// learner that starts late gets the whole log as entries read back from the leader's WAL
/// segments, several messages' worth.
#[test]
fn late_learner_catches_up_from_entries_read_back_from_the_wal() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let cs = ConfState {
        voters: vec![1],
        ..Default::default()
    };
    let mut nodes = vec![Some(Node::new(1, d1.path(), Some(cs.clone()))), None];
    nodes[0].as_mut().unwrap().storage.set_entry_cache_budget(0);
    nodes[0].as_mut().unwrap().rn.campaign().unwrap();
    pump(&mut nodes);
    let mut cc = ConfChange::default();
    cc.set_change_type(ConfChangeType::AddLearnerNode);
    cc.node_id = 2;
    nodes[0]
        .as_mut()
        .unwrap()
        .rn
        .propose_conf_change(vec![], cc)
        .unwrap();
    pump(&mut nodes);
    propose(&mut nodes, 0, 40, "late");
    {
        let l = nodes[0].as_ref().unwrap();
        assert_eq!(l.storage.entry_cache_usage(), (0, 0));
        assert!(l.storage.wal_segments().len() > 1);
        assert_eq!(l.storage.first_index().unwrap(), 1, "nothing compacted");
    }
    nodes[0].as_mut().unwrap().rn.raft.max_msg_size = 200;
    nodes[1] = Some(Node::new(2, d2.path(), Some(cs)));
    for _ in 0..10 {
        nodes[0].as_mut().unwrap().rn.tick();
        pump(&mut nodes);
    }
    let l = nodes[0].as_ref().unwrap();
    let f = nodes[1].as_ref().unwrap();
    assert_eq!(
        f.storage.last_index().unwrap(),
        l.storage.last_index().unwrap()
    );
    assert_eq!(f.data, l.data);
    assert_eq!(f.data.len(), 40);
}

/// After a restart nothing is cached: the committed entries the state machine has not applied
/// yet are read back from the WAL and handed out again.
#[test]
fn restart_hands_out_unapplied_entries_from_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let cs = ConfState {
        voters: vec![1],
        ..Default::default()
    };
    let mut nodes = vec![Some(Node::new(1, dir.path(), Some(cs)))];
    nodes[0].as_mut().unwrap().rn.campaign().unwrap();
    pump(&mut nodes);
    propose(&mut nodes, 0, 50, "r");
    let n = nodes[0].as_ref().unwrap();
    let applied = n.applied;
    let before = n.data.clone();
    nodes.clear();

    let (storage, _) = DiskStorage::open(dir.path(), opts()).unwrap();
    assert_eq!(storage.entry_cache_usage(), (0, 0));
    // The state machine is durable only up to 30 entries before the end.
    let mut nodes = vec![Some(Node::start(1, storage, applied - 30))];
    pump(&mut nodes);
    let n = nodes[0].as_ref().unwrap();
    assert_eq!(n.applied, applied);
    assert_eq!(n.data, before[before.len() - 30..].to_vec());
}
