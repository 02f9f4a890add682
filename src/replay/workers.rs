//! `segstream replay --workers N`: the replay spread over N engines, one per thread, with
//! the output of one engine.
//!
//! The file is processed in chunks of [`CHUNK_LINES`] lines, each in three steps:
//!
//! 1. *parse* (parallel): N parse threads parse the chunk in parts, events borrowing the
//!    chunk's buffer (a line rejected here is rejected as by one engine: size, format,
//!    future guard);
//! 2. *plan* (serial, cheap, on the calling thread as the parts come): the [`Router`]
//!    gives every event the worker of its person and every line the watermark one engine
//!    would have after it. Persons are the components of the links between ids seen (a
//!    superset of the engine's persons: a refused link still joins them here, which only
//!    keeps more together); a new person goes to the worker its first id hashes to. When a link joins two persons of
//!    different workers, the smaller one *moves*: at that line its worker takes its
//!    profiles, ids and forget records out ([`Engine::take_persons`]) and the other worker
//!    takes them in ([`Engine::put_persons`]) before applying the linking event, which then
//!    merges them exactly as one engine does. The watermark follows the largest event time
//!    of the events the engine accepts (every parsed event with a usable id; a late event
//!    is older than the largest time anyway);
//! 3. *apply* (parallel): each worker walks the chunk's lines in order: it gives or takes a
//!    moving person, applies its own events (an event's late check sees the watermark one
//!    engine would have had at that line), and moves its watermark wherever one engine's
//!    watermark moved (firing its own customers' timers, as one engine fires them there).
//!    A worker that must take a person waits for the worker giving it to reach that line:
//!    waits only ever go to earlier lines, so they always end.
//!
//! The threads live for the whole replay and the steps overlap across chunks, with no
//! barrier between chunks: while the workers apply one chunk (each at its own pace, at
//! most two planned chunks ahead of it), the next is read, parsed and planned (the router
//! and the watermark only follow the input, never the engines), and a chunk's output is
//! written as soon as every worker has applied it.
//!
//! Every transition is tagged with where one engine would have written it: the line, then
//! the event before the watermark move after it, and within one move by due time and
//! customer id (the order of one engine's timer heap). Writing the chunk's transitions in
//! that order gives the output of one engine byte for byte.
//!
//! Known limit: each engine interns names on its own, and a symbol class has a cap (4 095
//! custom event types, 4 095 trait names, 65 535 favourite values). When one engine would
//! reach a cap, N engines reach it later or not at all, and the output may differ; the
//! replay says so on stderr (and in the summary as `symbol_cap_reached`).

use std::hash::BuildHasher;
use std::io::{self, BufRead, Write};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender};
use std::sync::Arc;

use hashbrown::{DefaultHashBuilder, HashTable};

use segstream_core::engine::{home, Blocklist, Engine, Firing, Link, MovedPersons};
use segstream_core::event::{Event, EventError, EventKind, RejectReason};
use segstream_core::symbols::SymbolClass;
use segstream_core::time::{format_rfc3339, Millis};
use segstream_core::transition::Transition;

use super::{
    parse_checked, peak_resident_bytes, trim, Rejection, ReplayOptions, ReplaySummary,
    MAX_EVENT_BYTES,
};

/// Lines per chunk: large enough that the three steps' hand-overs cost little, small
/// enough that a chunk's buffer and events stay in cache-friendly sizes.
pub const CHUNK_LINES: usize = 8 * 1024;

/// At most this many rejections are listed in the summary (as in a replay with one engine).
const LISTED_REJECTIONS: usize = 20;

const NO_WORKER: u16 = u16::MAX;
const NO_MOVE: u32 = u32::MAX;

/// What one line asks of the workers.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// The worker that applies the line's event (`NO_WORKER`: blank, or rejected before
    /// the engine).
    worker: u16,
    /// A person that moves between workers before the event (index into the moves).
    moving: u32,
    /// The watermark after this line, when the line's event moved it (`Millis::MIN`: not).
    watermark: Millis,
}

/// A person (every id of its union-find component) moving from one worker to another.
#[derive(Debug)]
struct Move {
    from: u16,
    to: u16,
    ids: Vec<Arc<str>>,
}

/// A line parsed in step 1.
enum Slot<'a> {
    Blank,
    Rejected(EventError),
    Event(Event<'a>, Ids),
}

/// Which of an event's ids step 2 routes by, found in step 1 (in parallel): the fields of
/// the subject and of the id it links (as `Engine::resolve` picks them, blocked ids left
/// out), with their hashes.
#[derive(Debug, Clone, Copy)]
struct Ids {
    subject: Option<(IdField, u64)>,
    wanted: Option<(IdField, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdField {
    Customer,
    Anonymous,
    Previous,
}

impl IdField {
    fn of<'e>(self, event: &'e Event<'_>) -> &'e str {
        match self {
            IdField::Customer => event.customer_id.as_deref(),
            IdField::Anonymous => event.anonymous_id.as_deref(),
            IdField::Previous => event.previous_id.as_deref(),
        }
        .unwrap_or_default()
    }
}

impl Ids {
    fn of(event: &Event<'_>, blocklist: &Blocklist, hasher: &DefaultHashBuilder) -> Ids {
        let usable = |f: IdField| {
            let id = match f {
                IdField::Customer => event.customer_id.as_deref(),
                IdField::Anonymous => event.anonymous_id.as_deref(),
                IdField::Previous => event.previous_id.as_deref(),
            }?;
            (!blocklist.contains(id)).then(|| (f, hasher.hash_one(id)))
        };
        let Some(subject) = usable(IdField::Customer).or_else(|| usable(IdField::Anonymous)) else {
            return Ids {
                subject: None,
                wanted: None,
            };
        };
        let wanted = if event.kind == EventKind::Alias {
            usable(IdField::Previous)
        } else if subject.0 == IdField::Customer {
            usable(IdField::Anonymous)
        } else {
            None
        }
        .filter(|w| w.0.of(event) != subject.0.of(event));
        Ids {
            subject: Some(subject),
            wanted,
        }
    }
}

/// Step 2's state across chunks: persons (the components of the links seen) and their
/// workers, and event time.
///
/// Every id seen has one entry in a hash table, which names its person and that person's
/// worker: routing an event costs one probe per id (and the compare of the id's bytes).
/// When two persons join, the smaller one's entries are relabelled (each id is relabelled
/// only when its person at least doubles, so `O(log n)` times at most).
struct Router {
    hasher: DefaultHashBuilder,
    workers: u16,
    index: HashTable<Entry>,
    /// The ids' bytes, one after the other (no allocation per id).
    bytes: Vec<u8>,
    /// Per person: its ids (their hash and place in `bytes`).
    persons: Vec<Vec<Member>>,
    max_event_time: Millis,
    allowed_lateness: Millis,
}

/// An id in the router's table.
#[derive(Debug, Clone, Copy)]
struct Entry {
    hash: u64,
    /// Where the id's bytes are (see [`Member::at`]).
    at: u64,
    /// Its person (index into `Router::persons`) and that person's worker.
    person: u32,
    worker: u16,
}

/// An id of a person: its hash and where its bytes are in `Router::bytes` (start << 16 |
/// length; a usable id has at most 256 characters, so at most 1 024 bytes).
#[derive(Debug, Clone, Copy)]
struct Member {
    hash: u64,
    at: u64,
}

impl Router {
    fn new(engine: &Engine, workers: u16) -> Self {
        Router {
            hasher: DefaultHashBuilder::default(),
            workers,
            index: HashTable::new(),
            bytes: Vec::new(),
            persons: Vec::new(),
            max_event_time: Millis::MIN,
            allowed_lateness: engine.config().allowed_lateness,
        }
    }

    /// The bytes of the id stored at `at`.
    fn id_bytes(&self, at: u64) -> &[u8] {
        let start = (at >> 16) as usize;
        &self.bytes[start..start + (at & 0xffff) as usize]
    }

    /// `id`'s person and its worker, if `id` was seen.
    fn person(&self, id: &str, hash: u64) -> Option<(u32, u16)> {
        let e = self.index.find(hash, |e| {
            e.hash == hash && self.id_bytes(e.at) == id.as_bytes()
        })?;
        Some((e.person, e.worker))
    }

    /// Adds a new id to `person` (a new person of its own if `None`, on the worker the id
    /// hashes to). Returns the id's person and worker.
    fn add(&mut self, id: &str, hash: u64, person: Option<(u32, u16)>) -> (u32, u16) {
        assert!(
            id.len() < 1 << 16,
            "ids are validated to at most 1 024 bytes"
        );
        let at = ((self.bytes.len() as u64) << 16) | id.len() as u64;
        self.bytes.extend_from_slice(id.as_bytes());
        let (person, worker) = person.unwrap_or_else(|| {
            self.persons.push(Vec::new());
            ((self.persons.len() - 1) as u32, home(id, self.workers))
        });
        self.persons[person as usize].push(Member { hash, at });
        let entry = Entry {
            hash,
            at,
            person,
            worker,
        };
        self.index.insert_unique(hash, entry, |e| e.hash);
        (person, worker)
    }

    /// Plans one parsed event: its worker, a person that moves first, the watermark after.
    fn plan(&mut self, event: &Event<'_>, ids: Ids, moves: &mut Vec<Move>) -> Plan {
        let Some((subject_field, subject_hash)) = ids.subject else {
            // Every id is blocked: the engine rejects it (any worker will do), and it
            // does not move event time.
            return Plan {
                worker: 0,
                moving: NO_MOVE,
                watermark: Millis::MIN,
            };
        };
        let watermark = if event.timestamp > self.max_event_time {
            self.max_event_time = event.timestamp;
            event.timestamp.saturating_sub(self.allowed_lateness)
        } else {
            Millis::MIN
        };
        let subject = subject_field.of(event);
        let wanted = ids.wanted.map(|(f, h)| (f.of(event), h));
        let a = self.person(subject, subject_hash);
        let b = wanted.and_then(|(w, h)| self.person(w, h));
        let mut moving = NO_MOVE;
        let (_, worker) = match (a, b) {
            (None, None) => {
                let p = self.add(subject, subject_hash, None);
                if let Some((w, h)) = wanted {
                    self.add(w, h, Some(p));
                }
                p
            }
            (Some(p), None) => {
                if let Some((w, h)) = wanted {
                    self.add(w, h, Some(p));
                }
                p
            }
            (None, Some(p)) => self.add(subject, subject_hash, Some(p)),
            (Some(x), Some(y)) if x.0 == y.0 => x,
            (Some(x), Some(y)) => {
                let (big, small) =
                    if self.persons[x.0 as usize].len() >= self.persons[y.0 as usize].len() {
                        (x, y)
                    } else {
                        (y, x)
                    };
                let members = std::mem::take(&mut self.persons[small.0 as usize]);
                if small.1 != big.1 {
                    moving = moves.len() as u32;
                    moves.push(Move {
                        from: small.1,
                        to: big.1,
                        ids: members
                            .iter()
                            .map(|m| Arc::<str>::from(String::from_utf8_lossy(self.id_bytes(m.at))))
                            .collect(),
                    });
                }
                for m in &members {
                    if let Some(e) = self.index.find_mut(m.hash, |e| e.at == m.at) {
                        (e.person, e.worker) = big;
                    }
                }
                self.persons[big.0 as usize].extend(members);
                big
            }
        };
        Plan {
            worker,
            moving,
            watermark,
        }
    }
}

/// Where one engine would have written a run of transitions (see the module docs).
#[derive(Debug)]
struct Mark {
    line: u32,
    /// 0: the line's event; 1: the watermark move after it.
    phase: u8,
    due: Millis,
    customer: Option<Arc<str>>,
    /// The run's bytes in the worker's buffer.
    start: usize,
    end: usize,
}

impl Mark {
    fn key(&self) -> (u32, u8, Millis, Option<&str>) {
        (self.line, self.phase, self.due, self.customer.as_deref())
    }
}

/// A worker's output for one chunk: transitions as JSON lines, in runs marked with where
/// one engine would have written them.
#[derive(Default)]
struct Output {
    bytes: Vec<u8>,
    marks: Vec<Mark>,
}

/// One worker: its engine's counts across chunks, and a chunk's output.
#[derive(Default)]
struct Worker {
    summary: ReplaySummary,
    /// Events planned to move event time that the engine rejected (the plan was wrong:
    /// the output may differ from one engine's).
    mispredicted: u64,
    bytes: Vec<u8>,
    marks: Vec<Mark>,
    out: Vec<Transition>,
    fired: Vec<Firing>,
}

impl Worker {
    /// The chunk's output, leaving an empty one.
    fn take_output(&mut self) -> Output {
        Output {
            bytes: std::mem::take(&mut self.bytes),
            marks: std::mem::take(&mut self.marks),
        }
    }

    /// Serializes `self.out` (from `from`) as one run tagged `line`/`phase`/`due`/`customer`.
    fn emit(&mut self, from: usize, line: u32, phase: u8, due: Millis, customer: Option<Arc<str>>) {
        if from >= self.out.len() {
            return;
        }
        let start = self.bytes.len();
        self.summary.count(&self.out[from..]);
        for t in &self.out[from..] {
            t.write_json(&mut self.bytes);
            self.bytes.push(b'\n');
        }
        self.marks.push(Mark {
            line,
            phase,
            due,
            customer,
            start,
            end: self.bytes.len(),
        });
    }

    /// Serializes the runs of the timers fired into `self.out` (cleared afterwards).
    fn emit_fired(&mut self, line: u32) {
        let fired = std::mem::take(&mut self.fired);
        for (i, f) in fired.iter().enumerate() {
            let end = fired.get(i + 1).map_or(self.out.len(), |n| n.start);
            if end > f.start {
                let start = self.bytes.len();
                self.summary.count(&self.out[f.start..end]);
                for t in &self.out[f.start..end] {
                    t.write_json(&mut self.bytes);
                    self.bytes.push(b'\n');
                }
                self.marks.push(Mark {
                    line,
                    phase: 1,
                    due: f.due,
                    customer: Some(f.customer.clone()),
                    start,
                    end: self.bytes.len(),
                });
            }
        }
        self.fired = fired;
        self.fired.clear();
        self.out.clear();
    }

    fn reject(&mut self, line: u64, e: EventError) {
        let s = &mut self.summary;
        s.rejected += 1;
        if e.reason == RejectReason::Late {
            s.late += 1;
        }
        *s.rejected_by_reason
            .entry(e.reason.as_str().to_string())
            .or_default() += 1;
        if s.rejections.len() < LISTED_REJECTIONS {
            s.rejections.push(Rejection {
                line,
                reason: e.reason.as_str().to_string(),
                detail: e.detail,
            });
        }
    }

    /// Step 3 for one chunk: `give[to]` and `take[from]` carry the persons that move.
    fn apply_chunk(
        &mut self,
        me: u16,
        engine: &mut Engine,
        chunk: &Planned,
        give: &[Sender<MovedPersons>],
        take: &[Receiver<MovedPersons>],
    ) -> io::Result<()> {
        let (first_line, moves) = (chunk.first_line, &chunk.moves);
        // One engine's watermark moves at most lines; this engine's timers are due at few
        // of them. A move that fires nothing here is only noted (`behind`) and given to the
        // engine before it next does anything else, so the engine always acts on the
        // watermark one engine would have at that line, and fires at the same lines.
        let mut behind = Millis::MIN;
        let mut next_due = next_due_of(engine);
        let catch_up = |engine: &mut Engine, behind: &mut Millis, out: &mut Vec<Transition>| {
            if *behind != Millis::MIN {
                let mut fired = Vec::new();
                engine.advance_shard_watermark_marked(0, *behind, out, &mut fired);
                debug_assert!(fired.is_empty(), "a timer due before the watermark noted");
                *behind = Millis::MIN;
            }
        };
        for (k, (plan, slot)) in chunk.plans.iter().zip(chunk.slots()).enumerate() {
            let line = k as u32;
            if plan.moving != NO_MOVE {
                catch_up(engine, &mut behind, &mut self.out);
                let m = &moves[plan.moving as usize];
                if m.from == me {
                    // The receiver is gone only if its worker failed (reported there).
                    let _ = give[usize::from(m.to)].send(engine.take_persons(&m.ids));
                } else if m.to == me {
                    let moved = take[usize::from(m.from)].recv().map_err(|_| {
                        io::Error::other("a replay worker stopped before handing over a person")
                    })?;
                    engine
                        .put_persons(moved)
                        .map_err(|e| io::Error::other(format!("moving a person: {e}")))?;
                }
                next_due = next_due_of(engine);
            }
            if plan.worker == me {
                let Slot::Event(event, _) = slot else {
                    unreachable!("only parsed events are planned to a worker");
                };
                catch_up(engine, &mut behind, &mut self.out);
                let line_no = first_line + k as u64;
                match engine.apply(0, event, &mut self.out) {
                    Ok(applied) => {
                        self.summary.accepted += 1;
                        if let Link::Refused(r) = applied.link {
                            self.summary.links_refused += 1;
                            if self.summary.rejections.len() < LISTED_REJECTIONS {
                                self.summary.rejections.push(Rejection {
                                    line: line_no,
                                    reason: RejectReason::LinkRefused.as_str().to_string(),
                                    detail: format!("{r} (the event itself was applied)"),
                                });
                            }
                        }
                    }
                    Err(e) => {
                        if plan.watermark != Millis::MIN {
                            self.mispredicted += 1;
                        }
                        self.reject(line_no, e);
                    }
                }
                self.emit(0, line, 0, 0, None);
                self.out.clear();
                next_due = next_due_of(engine);
            }
            if plan.watermark != Millis::MIN {
                if next_due <= plan.watermark {
                    engine.advance_shard_watermark_marked(
                        0,
                        plan.watermark,
                        &mut self.out,
                        &mut self.fired,
                    );
                    self.emit_fired(line);
                    behind = Millis::MIN;
                    next_due = next_due_of(engine);
                } else {
                    behind = plan.watermark;
                }
            }
        }
        catch_up(engine, &mut behind, &mut self.out);
        Ok(())
    }
}

/// When the engine's next timer can fire (`Millis::MAX`: none pending).
fn next_due_of(engine: &Engine) -> Millis {
    engine.next_timer_due(0).unwrap_or(Millis::MAX)
}

/// A part of a chunk's lines, parsed (step 1).
type Slots<'a> = Vec<Slot<'a>>;

self_cell::self_cell!(
    /// A part of a chunk after step 1: its events borrow the chunk's buffer, which it
    /// keeps alive (a part travels from a parse thread to the planner, then with its
    /// chunk to every worker).
    struct Part {
        owner: Arc<Vec<u8>>,
        #[covariant]
        dependent: Slots,
    }
);

/// A chunk after steps 1 and 2, shared by the workers.
struct Planned {
    /// The chunk's number (from 0) and its first line's number (from 1).
    chunk: u64,
    first_line: u64,
    parts: Vec<Part>,
    plans: Vec<Plan>,
    moves: Vec<Move>,
}

impl Planned {
    fn slots(&self) -> impl Iterator<Item = &Slot<'_>> {
        self.parts.iter().flat_map(|p| p.borrow_dependent().iter())
    }
}

/// A part to parse: the chunk's buffer and the part's lines in it.
struct ParseJob {
    chunk: u64,
    part: usize,
    buf: Arc<Vec<u8>>,
    lines: Vec<(usize, usize)>,
}

/// What the threads report to the planning (main) thread.
enum Report {
    Parsed {
        chunk: u64,
        part: usize,
        slots: Part,
    },
    Applied {
        chunk: u64,
        worker: usize,
        output: Output,
        result: io::Result<()>,
    },
    /// A thread is unwinding from a panic (the scope re-raises it once every thread ends).
    Panicked(String),
}

/// Tells the planning thread when the thread holding it panics, so that it stops waiting
/// for that thread's reports instead of waiting forever.
struct PanicReport(Sender<Report>);

impl Drop for PanicReport {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let name = std::thread::current()
                .name()
                .unwrap_or("a replay thread")
                .to_string();
            let _ = self.0.send(Report::Panicked(name));
        }
    }
}

/// A chunk being planned: its parts as they arrive, planned in line order.
struct Planning {
    chunk: u64,
    first_line: u64,
    part_len: usize,
    parts: Vec<Option<Part>>,
    /// Parts planned so far (a prefix).
    done: usize,
    plans: Vec<Plan>,
    moves: Vec<Move>,
}

/// The chunks' buffers, reused once every part of a chunk is dropped (a new 2 MB buffer per
/// chunk costs page faults: the allocator returns freed large blocks to the system).
#[derive(Default)]
struct Buffers {
    lent: Vec<Arc<Vec<u8>>>,
}

impl Buffers {
    /// A buffer no part uses any more, else a new one.
    fn take(&mut self) -> Vec<u8> {
        let free = self.lent.iter().position(|b| Arc::strong_count(b) == 1);
        match free.and_then(|i| Arc::try_unwrap(self.lent.swap_remove(i)).ok()) {
            Some(buf) => buf,
            None => Vec::with_capacity(CHUNK_LINES * 256),
        }
    }
}

/// The workers' outputs of the chunks applied and not yet written, by chunk.
#[derive(Default)]
struct Outputs {
    next: u64,
    waiting: std::collections::BTreeMap<u64, Vec<Option<Output>>>,
}

impl Outputs {
    /// Takes worker `worker`'s output of `chunk`, and writes every chunk whose outputs are
    /// all in, in chunk order.
    fn put(
        &mut self,
        chunk: u64,
        worker: usize,
        output: Output,
        workers: usize,
        w: &mut dyn Write,
    ) -> io::Result<()> {
        self.waiting
            .entry(chunk)
            .or_insert_with(|| (0..workers).map(|_| None).collect())[worker] = Some(output);
        while let Some(entry) = self.waiting.first_entry() {
            if *entry.key() != self.next || entry.get().iter().any(Option::is_none) {
                break;
            }
            let mut outputs: Vec<Output> = entry.remove().into_iter().flatten().collect();
            write_in_order(&mut outputs, w)?;
            self.next += 1;
        }
        Ok(())
    }
}

/// Runs the replay over `engines` (one per worker, built alike, fresh), writing the
/// transitions one engine would have written, in its order. See the module docs.
pub fn replay_workers(
    engines: &mut [Engine],
    mut events: impl BufRead,
    transitions: &mut dyn Write,
    options: ReplayOptions,
) -> io::Result<ReplaySummary> {
    let n = engines.len();
    assert!(
        (1..usize::from(NO_WORKER)).contains(&n),
        "1 to 65534 workers"
    );
    let skew = engines[0].config().max_future_skew;
    let mut router = Router::new(&engines[0], n as u16);
    // Step 1's share of the routing: which ids an event links (blocked ones left out),
    // hashed as the router's table hashes them.
    let blocklist = Blocklist::new(&engines[0].config().identity);
    let hasher = router.hasher;
    let mut workers: Vec<Worker> = (0..n).map(|_| Worker::default()).collect();
    let mut summary = ReplaySummary::default();
    let (format, now) = (options.format, options.now);

    let failure = std::thread::scope(|s| -> io::Result<()> {
        let (report, reports) = channel::<Report>();
        // Parse threads, one per worker: parts go to them in turn.
        let mut parse_jobs = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = channel::<ParseJob>();
            parse_jobs.push(tx);
            let (report, blocklist, hasher) = (report.clone(), &blocklist, &hasher);
            let thread = std::thread::Builder::new().name(format!("replay-parse-{i}"));
            thread.spawn_scoped(s, move || {
                let _guard = PanicReport(report.clone());
                for job in rx {
                    let ParseJob {
                        chunk,
                        part,
                        buf,
                        lines,
                    } = job;
                    let slots = Part::new(buf, |buf| {
                        lines
                            .iter()
                            .map(|&(a, b)| {
                                parse_line(trim(&buf[a..b]), format, now, skew, blocklist, hasher)
                            })
                            .collect()
                    });
                    if report.send(Report::Parsed { chunk, part, slots }).is_err() {
                        return;
                    }
                }
            })?;
        }
        // Workers: each applies the planned chunks in order, with its own engine; at most
        // two planned chunks wait for a worker (the planner waits when more would).
        let (give, take) = channels(n);
        let mut apply_jobs = Vec::with_capacity(n);
        for (me, (((worker, engine), give), take)) in workers
            .iter_mut()
            .zip(engines.iter_mut())
            .zip(give)
            .zip(take)
            .enumerate()
        {
            let (tx, rx) = sync_channel::<Arc<Planned>>(2);
            apply_jobs.push(tx);
            let report = report.clone();
            let thread = std::thread::Builder::new().name(format!("replay-worker-{me}"));
            thread.spawn_scoped(s, move || {
                let _guard = PanicReport(report.clone());
                for chunk in rx {
                    let result = worker.apply_chunk(me as u16, engine, &chunk, &give, &take);
                    let failed = result.is_err();
                    let output = worker.take_output();
                    let sent = report.send(Report::Applied {
                        chunk: chunk.chunk,
                        worker: me,
                        output,
                        result,
                    });
                    if failed || sent.is_err() {
                        return;
                    }
                }
            })?;
        }
        drop(report);

        // This thread reads a chunk, hands its parts to the parse threads, plans them as
        // they come (in line order), passes the planned chunk to every worker and reads
        // the next; it writes each chunk's output once every worker has applied it.
        let mut outputs = Outputs::default();
        let mut buffers = Buffers::default();
        let mut planning: Option<Planning> = None;
        let mut next_chunk = 0u64;
        let mut next_line = 1u64;
        let mut input_done = false;
        let mut ranges: Vec<(usize, usize)> = Vec::with_capacity(CHUNK_LINES);
        let mut reader = super::chunks::ChunkReader::new(&mut events, CHUNK_LINES);
        let mut result = Ok(());
        loop {
            if planning.is_none() && !input_done && result.is_ok() {
                let mut buf = buffers.take();
                if let Err(e) = reader.read_chunk(&mut buf, &mut ranges) {
                    result = Err(e);
                } else if ranges.is_empty() {
                    input_done = true;
                } else {
                    let buf = Arc::new(buf);
                    buffers.lent.push(buf.clone());
                    let parts_n = (4 * n).min(ranges.len());
                    let part_len = ranges.len().div_ceil(parts_n);
                    let parts_n = ranges.len().div_ceil(part_len);
                    for (part, lines) in ranges.chunks(part_len).enumerate() {
                        // A parse thread is gone only if it panicked (reported at the end).
                        let _ = parse_jobs[part % n].send(ParseJob {
                            chunk: next_chunk,
                            part,
                            buf: buf.clone(),
                            lines: lines.to_vec(),
                        });
                    }
                    planning = Some(Planning {
                        chunk: next_chunk,
                        first_line: next_line,
                        part_len,
                        parts: (0..parts_n).map(|_| None).collect(),
                        done: 0,
                        plans: Vec::with_capacity(ranges.len()),
                        moves: Vec::new(),
                    });
                    next_chunk += 1;
                    next_line += ranges.len() as u64;
                }
            }
            if (input_done || result.is_err()) && planning.is_none() {
                // Nothing more to plan: let the workers finish what they have.
                apply_jobs.clear();
                parse_jobs.clear();
                if outputs.next == next_chunk || result.is_err() {
                    break;
                }
            }
            let Ok(message) = reports.recv() else {
                break;
            };
            match message {
                Report::Parsed { chunk, part, slots } => {
                    let Some(p) = planning.as_mut().filter(|p| p.chunk == chunk) else {
                        continue;
                    };
                    p.parts[part] = Some(slots);
                    while let Some(Some(slots)) = p.parts.get(p.done) {
                        let first = p.first_line + (p.done * p.part_len) as u64;
                        for (k, slot) in slots.borrow_dependent().iter().enumerate() {
                            p.plans.push(plan_line(
                                &mut router,
                                &mut summary,
                                first + k as u64,
                                slot,
                                &mut p.moves,
                            ));
                        }
                        p.done += 1;
                    }
                    if p.done == p.parts.len() {
                        let Some(p) = planning.take() else {
                            continue;
                        };
                        let planned = Arc::new(Planned {
                            chunk: p.chunk,
                            first_line: p.first_line,
                            parts: p.parts.into_iter().flatten().collect(),
                            plans: p.plans,
                            moves: p.moves,
                        });
                        for tx in &apply_jobs {
                            // A worker is gone only after it failed (its report follows).
                            let _ = tx.send(planned.clone());
                        }
                    }
                }
                Report::Applied {
                    chunk,
                    worker,
                    output,
                    result: applied,
                } => {
                    if let Err(e) = applied {
                        result = result.and(Err(e));
                        planning = None;
                        input_done = true;
                        continue;
                    }
                    if result.is_ok() {
                        result = outputs.put(chunk, worker, output, n, transitions);
                    }
                }
                Report::Panicked(name) => {
                    result = result.and(Err(io::Error::other(format!("{name} panicked"))));
                    break;
                }
            }
        }
        drop(apply_jobs);
        drop(parse_jobs);
        result
    });
    failure?;

    if let Some(t) = options.advance_to {
        std::thread::scope(|s| {
            for (worker, engine) in workers.iter_mut().zip(engines.iter_mut()) {
                s.spawn(move || {
                    engine.advance_watermark_marked(t, &mut worker.out, &mut worker.fired);
                    worker.emit_fired(u32::MAX);
                });
            }
        });
        let mut outputs: Vec<Output> = workers.iter_mut().map(Worker::take_output).collect();
        write_in_order(&mut outputs, transitions)?;
    }

    for (w, engine) in workers.iter().zip(engines.iter()) {
        let s = &w.summary;
        summary.accepted += s.accepted;
        summary.rejected += s.rejected;
        summary.late += s.late;
        summary.links_refused += s.links_refused;
        for (r, c) in &s.rejected_by_reason {
            *summary.rejected_by_reason.entry(r.clone()).or_default() += c;
        }
        summary.rejections.extend(s.rejections.iter().cloned());
        summary.transitions += s.transitions;
        for (seg, [en, ex]) in &s.transitions_by_segment {
            let e = summary
                .transitions_by_segment
                .entry(seg.clone())
                .or_default();
            e[0] += en;
            e[1] += ex;
        }
        summary.profiles += engine.profile_count();
        summary.links += engine.stats().links;
        summary.merges += engine.stats().merges;
        summary.profiles_evicted += engine.stats().profiles_evicted;
    }
    summary.rejections.sort_by_key(|r| r.line);
    summary.rejections.truncate(LISTED_REJECTIONS);
    summary.peak_resident_bytes = peak_resident_bytes();
    let wm = engines[0].watermark();
    summary.watermark = (wm != Millis::MIN).then(|| format_rfc3339(wm));
    let mispredicted: u64 = workers.iter().map(|w| w.mispredicted).sum();
    let capped = symbol_cap_reached(engines);
    if mispredicted > 0 || capped {
        eprintln!(
            "warning: a symbol cap (4095 event types or trait names, 65535 values) was reached: \
             with --workers {n} the transitions may differ from one worker's; replay with \
             --workers 1 for the exact result"
        );
        summary.symbol_cap_reached = true;
    }
    transitions.flush()?;
    Ok(summary)
}

/// Whether an engine's symbol table is full in some class (one engine for the whole input
/// would have been full at least as early).
fn symbol_cap_reached(engines: &[Engine]) -> bool {
    let mut union: [std::collections::HashSet<&str>; 3] = Default::default();
    for e in engines {
        for (i, class) in [
            SymbolClass::EventType,
            SymbolClass::TraitKey,
            SymbolClass::Value,
        ]
        .into_iter()
        .enumerate()
        {
            let sym = e.symbols();
            for s in 0..sym.len(class) {
                union[i].insert(sym.name(class, s as u32));
            }
        }
    }
    union[0].len() >= 4_095 || union[1].len() >= 4_095 || union[2].len() >= 65_535
}

/// One channel per pair of workers: `give[from][to]`, `take[to][from]`.
#[allow(clippy::type_complexity)]
fn channels(
    n: usize,
) -> (
    Vec<Vec<Sender<MovedPersons>>>,
    Vec<Vec<Receiver<MovedPersons>>>,
) {
    let mut give: Vec<Vec<Sender<MovedPersons>>> = (0..n).map(|_| Vec::with_capacity(n)).collect();
    let mut take: Vec<Vec<Receiver<MovedPersons>>> =
        (0..n).map(|_| Vec::with_capacity(n)).collect();
    // `take[to]` is filled in `from` order, as `give[from]` in `to` order.
    for g in give.iter_mut() {
        for t in take.iter_mut() {
            let (tx, rx) = channel();
            g.push(tx);
            t.push(rx);
        }
    }
    (give, take)
}

/// Writes the workers' runs of a chunk in the order one engine would have written them.
fn write_in_order(outputs: &mut [Output], w: &mut dyn Write) -> io::Result<()> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (i, o) in outputs.iter().enumerate() {
        runs.extend((0..o.marks.len()).map(|m| (i, m)));
    }
    runs.sort_by(|a, b| {
        outputs[a.0].marks[a.1]
            .key()
            .cmp(&outputs[b.0].marks[b.1].key())
    });
    for (i, m) in runs {
        let mark = &outputs[i].marks[m];
        w.write_all(&outputs[i].bytes[mark.start..mark.end])?;
    }
    for o in outputs {
        o.bytes.clear();
        o.marks.clear();
    }
    Ok(())
}

/// Step 2 for one line: counts a line rejected before the engine, plans an event.
fn plan_line(
    router: &mut Router,
    summary: &mut ReplaySummary,
    line: u64,
    slot: &Slot<'_>,
    moves: &mut Vec<Move>,
) -> Plan {
    match slot {
        Slot::Blank => {}
        Slot::Rejected(e) => {
            summary.events_read += 1;
            summary.rejected += 1;
            *summary
                .rejected_by_reason
                .entry(e.reason.as_str().to_string())
                .or_default() += 1;
            if summary.rejections.len() < LISTED_REJECTIONS {
                summary.rejections.push(Rejection {
                    line,
                    reason: e.reason.as_str().to_string(),
                    detail: e.detail.clone(),
                });
            }
        }
        Slot::Event(event, ids) => {
            summary.events_read += 1;
            return router.plan(event, *ids, moves);
        }
    }
    Plan {
        worker: NO_WORKER,
        moving: NO_MOVE,
        watermark: Millis::MIN,
    }
}

/// Step 1 for one line (trimmed): as a replay with one engine checks it before the engine.
fn parse_line<'a>(
    line: &'a [u8],
    format: segstream_core::event::InputFormat,
    now: Option<Millis>,
    skew: Option<Millis>,
    blocklist: &Blocklist,
    hasher: &DefaultHashBuilder,
) -> Slot<'a> {
    if line.is_empty() {
        return Slot::Blank;
    }
    if line.len() > MAX_EVENT_BYTES {
        return Slot::Rejected(EventError::new(
            RejectReason::TooLarge,
            format!(
                "{} bytes exceed the {MAX_EVENT_BYTES}-byte limit",
                line.len()
            ),
        ));
    }
    match parse_checked(format, line, now, skew) {
        Ok(e) => {
            let ids = Ids::of(&e, blocklist, hasher);
            Slot::Event(e, ids)
        }
        Err(e) => Slot::Rejected(e),
    }
}

/// [`super::write_profiles`] for the engines of a replay with several workers (each
/// person lives in one of them): every profile as one JSON line, ordered by customer id.
pub fn write_profiles_of(engines: &[Engine], w: &mut dyn Write) -> io::Result<()> {
    let mut ids: Vec<(&str, usize)> = engines
        .iter()
        .enumerate()
        .flat_map(|(i, e)| e.profiles().map(move |(k, _)| (k, i)))
        .collect();
    ids.sort_unstable();
    for (id, i) in ids {
        if let Some(v) = crate::profile_view::profile_json(&engines[i], id) {
            serde_json::to_writer(&mut *w, &v)?;
            w.write_all(b"\n")?;
        }
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use segstream_core::engine::EngineConfig;
    use std::collections::HashMap;

    /// The router against a plain union-find: every id's person is the component of the
    /// links seen, on the worker of the component's first id unless a join moved it (the
    /// smaller person moves, to the bigger one's worker, ties to the subject's), and a move
    /// carries exactly the smaller person's ids.
    #[derive(Default)]
    struct Model {
        comp: HashMap<String, usize>,
        members: Vec<Vec<String>>,
        worker_of: Vec<u16>,
    }

    /// Adds `id` to component `to` (a new one if `None`) unless it is known; its component.
    fn add(m: &mut Model, workers: u16, id: &str, to: Option<usize>) -> usize {
        if let Some(&k) = m.comp.get(id) {
            return k;
        }
        let k = to.unwrap_or_else(|| {
            m.members.push(Vec::new());
            m.worker_of.push(home(id, workers));
            m.members.len() - 1
        });
        m.comp.insert(id.to_string(), k);
        m.members[k].push(id.to_string());
        k
    }

    fn check(workers: u16, links: &[(u8, Option<u8>)]) {
        let text = "[segments.any]\ncondition = 'count(any, ever) > 0'\n";
        let engine = Engine::from_source("segments.toml", text, EngineConfig::default()).unwrap();
        let mut router = Router::new(&engine, workers);
        let blocklist = Blocklist::new(&engine.config().identity);
        // The model: each id's component (the smallest member's name stands for it), the
        // components' members in join order and their workers.
        let mut model = Model::default();
        for (n, &(c, a)) in links.iter().enumerate() {
            let customer = format!("c-{c}");
            let line = match a {
                Some(a) => format!(
                    r#"{{"event_id":"e{n}","customer_id":"{customer}","anonymous_id":"a-{a}","type":"app_opened","timestamp":1793577600000}}"#
                ),
                None => format!(
                    r#"{{"event_id":"e{n}","customer_id":"{customer}","type":"app_opened","timestamp":1793577600000}}"#
                ),
            };
            let event = segstream_core::event::parse_event(line.as_bytes()).unwrap();
            let ids = Ids::of(&event, &blocklist, &router.hasher);
            let mut moves = Vec::new();
            let plan = router.plan(&event, ids, &mut moves);

            let anon = a.map(|a| format!("a-{a}"));
            // A new subject joins the person of the id it links (it has no events yet).
            let into = anon.as_ref().and_then(|a| model.comp.get(a).copied());
            let k = add(&mut model, workers, &customer, into);
            let mut expected_move: Option<(u16, u16, Vec<String>)> = None;
            let k = match anon {
                None => k,
                Some(anon) => match model.comp.get(&anon).copied() {
                    None => add(&mut model, workers, &anon, Some(k)),
                    Some(j) if j == k => k,
                    Some(j) => {
                        let (big, small) = if model.members[k].len() >= model.members[j].len() {
                            (k, j)
                        } else {
                            (j, k)
                        };
                        let moved = std::mem::take(&mut model.members[small]);
                        if model.worker_of[small] != model.worker_of[big] {
                            expected_move =
                                Some((model.worker_of[small], model.worker_of[big], moved.clone()));
                        }
                        for id in &moved {
                            model.comp.insert(id.clone(), big);
                        }
                        model.members[big].extend(moved);
                        big
                    }
                },
            };
            assert_eq!(
                plan.worker, model.worker_of[k],
                "line {n}: the event's worker"
            );
            match expected_move {
                None => assert!(moves.is_empty() && plan.moving == NO_MOVE, "line {n}"),
                Some((from, to, ids)) => {
                    assert_eq!(plan.moving, 0, "line {n}");
                    let m = &moves[0];
                    assert_eq!((m.from, m.to), (from, to), "line {n}");
                    let got: Vec<&str> = m.ids.iter().map(|i| &**i).collect();
                    assert_eq!(got, ids, "line {n}: the moving ids");
                }
            }
            // Every id seen: its entry names its component's person and worker.
            for (id, &k) in &model.comp {
                let hash = router.hasher.hash_one(id.as_str());
                let (person, worker) = router.person(id, hash).expect("a seen id");
                assert_eq!(worker, model.worker_of[k], "line {n}: {id}'s worker");
                let leader = &model.members[k][0];
                let leader_hash = router.hasher.hash_one(leader.as_str());
                assert_eq!(
                    router.person(leader, leader_hash).map(|p| p.0),
                    Some(person),
                    "line {n}: {id} and {leader} are one person"
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn the_router_follows_the_links(
            workers in 1u16..4,
            links in prop::collection::vec((0u8..24, prop::option::of(0u8..24)), 1..120),
        ) {
            check(workers, &links);
        }
    }

    /// Chains of joins relabel ids more than once: a person built from pairs, then pairs
    /// of pairs, and so on, on three workers.
    #[test]
    fn the_router_relabels_ids_joined_again_and_again() {
        let mut links: Vec<(u8, Option<u8>)> = (0..32).map(|i| (i, Some(i))).collect();
        for step in [1u8, 2, 4, 8, 16] {
            for i in (0..32).step_by(2 * step as usize) {
                links.push((i, Some(i + step)));
            }
        }
        check(3, &links);
    }
}
