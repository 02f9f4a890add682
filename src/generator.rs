//! Deterministic simulator of the reference funnel (see `docs/events.md`).
//!
//! [`generate`] turns a [`FunnelConfig`] into a time-ordered list of input events, each a
//! JSON line valid against `schemas/event.schema.json`. It is pure (no I/O, no clock, no
//! global random state): the same configuration always gives the same events, byte for
//! byte. The criterion benchmark, the demo and the load tests feed its output to the engine.
//!
//! What every simulated customer does over `days` days starting at `start_ms`:
//!
//! - an `identify` with firmographic traits (role, industry, company_size, country,
//!   time_zone, customer_status, email_opt_in, age_band) within the first two hours;
//! - ~60% click the campaign's ad (`ad_click`) before the webinar and land on the webinar
//!   page (`page_view` with utm_source / utm_medium / utm_campaign) seconds later;
//! - `register_rate` of those clickers register (`webinar_registered`) within 2 h of the
//!   click; those who do not may click a follow-up video ad a day or so later (and never
//!   register: they are the **clicked-but-not-registered** segment);
//! - `attend_rate` of the registered attend (`webinar_attended` at the start, then
//!   `webinar_left`); the webinar is on day 5 (15:00 to 16:00 UTC), or on the last day of a
//!   shorter period;
//! - browsing sessions of page views and clicks (/pricing, /blog/..., /docs/...);
//! - mailings to opted-in customers: a weekly newsletter, blog digest and offer, a webinar
//!   invitation before the webinar, a confirmation and a reminder for the registered (`email_sent`, ~40% `email_open`, ~10% `email_click`
//!   followed by a page view, rare `email_bounce`), and ~2% `unsubscribe`;
//! - a few purchases (amount, currency EUR, product, category, sometimes a discount code),
//!   more often after attending, followed by a CRM status update;
//! - now and then a custom event (`trial_started`, `event_participation`).
//!
//! Identities: `anonymous_share` of the customers arrive as anonymous visitors. Until they
//! register, their events carry only a cookie id (`anonymous_id`, 16 hex digits); the
//! registration carries both their customer id and the cookie (it links the two), and the
//! CRM record (`identify`) follows. A quarter of them also browse on a second device, whose
//! cookie is linked when they click a mail there. Visitors who never register stay
//! anonymous. Known customers' web events carry their cookie beside the customer id half of
//! the time (a logged-in visit). The Kafka key of an event is its customer id, or its
//! anonymous id when it has none, so one person's ids start out on different partitions.
//!
//! The resulting mix (default config) is about: page_view 48%, email_* and unsubscribe 23%,
//! click 12%, ad_click 6%, identify 5%, purchase 3%, webinar_* 2.5%, custom 0.2%; about 16
//! events per customer and week (visitors who stay anonymous get no mail and buy nothing). About 5% of the events carry their
//! timestamp as epoch milliseconds, the rest as RFC 3339 UTC with milliseconds. Each
//! customer draws from its own random stream, so customer `c-000007` behaves the same
//! whether 10 or 10 000 customers are simulated.

use serde_json::{json, Map, Value};

const SECOND: i64 = 1_000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct FunnelConfig {
    /// Number of customers (`c-000001` ... ).
    pub customers: usize,
    /// Seed of the random streams; the output is a pure function of the whole config.
    pub seed: u64,
    /// Start of the simulated period, epoch milliseconds (UTC). Must lie between 1970 and
    /// 9999 so that timestamps can be written as RFC 3339.
    pub start_ms: i64,
    /// Campaign id on the ad clicks and utm_campaign of the landing page views.
    pub campaign: String,
    /// Id of the webinar customers register for and attend.
    pub webinar_id: String,
    /// Share of first-time ad clickers who register within 2 h of the click (0.0 ..= 1.0).
    pub register_rate: f64,
    /// Share of registered customers who attend the webinar (0.0 ..= 1.0).
    pub attend_rate: f64,
    /// Length of the simulated period in days (at least 1). No event lies outside it.
    pub days: u32,
    /// Share of customers who arrive as anonymous visitors and are known only once they
    /// register (0.0 ..= 1.0).
    pub anonymous_share: f64,
}

/// 2026-11-02T00:00:00Z, the default start of the simulated period.
pub const DEFAULT_START_MS: i64 = 1_793_577_600_000;

impl Default for FunnelConfig {
    /// 1000 customers, seed 42, 7 days from 2026-11-02T00:00:00Z, campaign
    /// `webinar-q4-ads`, webinar `W-2026-12`, 30% register, 60% of them attend, 40% arrive
    /// anonymous.
    fn default() -> Self {
        Self {
            customers: 1000,
            seed: 42,
            start_ms: DEFAULT_START_MS,
            campaign: "webinar-q4-ads".to_owned(),
            webinar_id: "W-2026-12".to_owned(),
            register_rate: 0.3,
            attend_rate: 0.6,
            days: 7,
            anonymous_share: 0.4,
        }
    }
}

/// One simulated input event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedEvent {
    /// The simulated person (`c-000007`), whatever ids the event carries.
    pub person: String,
    /// The Kafka message key: the event's customer id, or its anonymous id if it has none.
    pub key: String,
    /// Event time, epoch milliseconds (equal to the JSON's `timestamp`).
    pub timestamp_ms: i64,
    /// The event as one line of JSON (no trailing newline).
    pub json: String,
}

/// `n` page views of customers `tick-0` ... `tick-{n-1}`, one hour after the simulated
/// period ends. Appended to a stream that is split over partitions (keyed by customer),
/// they carry every partition's event time past the end, so that each partition fires its
/// deadlines as one unsplit stream would: a test comparing a multi-instance run with the
/// offline replay of the same events appends them to both.
pub fn closing_ticks(config: &FunnelConfig, n: usize) -> Vec<GeneratedEvent> {
    let at = config.start_ms + i64::from(config.days.max(1)) * DAY + HOUR;
    (0..n)
        .map(|i| {
            let person = format!("tick-{i}");
            let json = json!({
                "event_id": format!("tick-{}-{i}", config.seed),
                "customer_id": person,
                "type": "page_view",
                "timestamp": segstream_core::time::format_rfc3339(at),
                "properties": {"url": "/"},
            })
            .to_string();
            GeneratedEvent {
                key: person.clone(),
                person,
                timestamp_ms: at,
                json,
            }
        })
        .collect()
}

/// Simulates the reference funnel. The events are sorted by `timestamp_ms` (ties keep the
/// order in which they were simulated); event ids are `e-{seed}-{n}` with `n` the position
/// in the returned list.
pub fn generate(config: &FunnelConfig) -> Vec<GeneratedEvent> {
    let period = Period::new(config);
    let mut drafts = Vec::with_capacity(config.customers.saturating_mul(24));
    for index in 0..config.customers {
        // Identity decisions draw from a stream of their own: the behaviour stream (and so
        // the events of known customers) is the same whatever the identities.
        let mut ids =
            fastrand::Rng::with_seed(customer_seed(config.seed ^ ID_STREAM, index as u64));
        let anonymous = ids.f64() < config.anonymous_share;
        let second_device = anonymous && ids.f64() < 0.25;
        let mut sim = CustomerSim {
            config,
            period: &period,
            rng: fastrand::Rng::with_seed(customer_seed(config.seed, index as u64)),
            ids,
            customer: index,
            out: &mut drafts,
            subscribed: true,
            anonymous,
            known_from: if anonymous { i64::MAX } else { i64::MIN },
            second_device,
            second_linked: i64::MAX,
            device: Device::First,
        };
        sim.run();
    }
    drafts.retain(|d| d.ts >= period.start && d.ts < period.end);
    drafts.sort_by_key(|d| d.ts);
    drafts
        .into_iter()
        .enumerate()
        .map(|(n, draft)| draft.render(config.seed, n))
        .collect()
}

/// The simulated period and the webinar inside it.
struct Period {
    start: i64,
    end: i64,
    days: i64,
    webinar_start: i64,
    webinar_end: i64,
}

impl Period {
    fn new(config: &FunnelConfig) -> Self {
        let days = i64::from(config.days.max(1));
        let start = config.start_ms;
        // Day 5 (index 4) at 15:00 UTC, or the last day of a shorter period.
        let webinar_start = start + 4.min(days - 1) * DAY + 15 * HOUR;
        Self {
            start,
            end: start + days * DAY,
            days,
            webinar_start,
            webinar_end: webinar_start + HOUR,
        }
    }
}

/// Seeds the identity decisions' random stream apart from the behaviour stream.
const ID_STREAM: u64 = 0x1D_E471_7135;

/// Which of a person's browsers or devices an event comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Device {
    First,
    Second,
}

/// Which ids an event carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ids {
    /// The customer id only.
    Known,
    /// The device's cookie only.
    Anonymous(Device),
    /// Both: the customer id and the device's cookie (a link, or a logged-in visit).
    Both(Device),
}

/// An event before it gets its id and its JSON.
struct Draft {
    ts: i64,
    customer: usize,
    ids: Ids,
    kind: &'static str,
    properties: Option<Value>,
    traits: Option<Value>,
    epoch_timestamp: bool,
}

impl Draft {
    fn render(self, seed: u64, n: usize) -> GeneratedEvent {
        let person = customer_id(self.customer);
        let mut json = String::with_capacity(256);
        json.push_str("{\"event_id\":");
        push_json_string(&mut json, &format!("e-{seed}-{n}"));
        let cookie = |d: Device| cookie_id(seed, self.customer, d);
        let key = match self.ids {
            Ids::Known => {
                json.push_str(",\"customer_id\":");
                push_json_string(&mut json, &person);
                person.clone()
            }
            Ids::Anonymous(d) => {
                let c = cookie(d);
                json.push_str(",\"anonymous_id\":");
                push_json_string(&mut json, &c);
                c
            }
            Ids::Both(d) => {
                json.push_str(",\"customer_id\":");
                push_json_string(&mut json, &person);
                json.push_str(",\"anonymous_id\":");
                push_json_string(&mut json, &cookie(d));
                person.clone()
            }
        };
        json.push_str(",\"type\":");
        push_json_string(&mut json, self.kind);
        json.push_str(",\"timestamp\":");
        match rfc3339_millis(self.ts) {
            Some(text) if !self.epoch_timestamp => push_json_string(&mut json, &text),
            _ => json.push_str(&self.ts.to_string()),
        }
        if let Some(properties) = &self.properties {
            json.push_str(",\"properties\":");
            json.push_str(&properties.to_string());
        }
        if let Some(traits) = &self.traits {
            json.push_str(",\"traits\":");
            json.push_str(&traits.to_string());
        }
        json.push('}');
        GeneratedEvent {
            person,
            key,
            timestamp_ms: self.ts,
            json,
        }
    }
}

/// A person's cookie on a device: 16 hex digits, stable per seed, person and device.
fn cookie_id(seed: u64, customer: usize, device: Device) -> String {
    let salt = match device {
        Device::First => 0xC00C_1E01,
        Device::Second => 0xC00C_1E02,
    };
    format!("{:016x}", customer_seed(seed ^ salt, customer as u64))
}

fn push_json_string(out: &mut String, s: &str) {
    out.push_str(&Value::from(s).to_string());
}

fn customer_id(index: usize) -> String {
    format!("c-{:06}", index + 1)
}

/// `2026-11-02T09:15:00.000Z`, or `None` outside the years 0000..=9999.
fn rfc3339_millis(ms: i64) -> Option<String> {
    (0..253_402_300_800_000)
        .contains(&ms)
        .then(|| segstream_core::time::format_rfc3339(ms))
}

/// An independent, well-mixed seed per customer (splitmix64 of seed and index).
fn customer_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const ROLES: &[&str] = &[
    "marketing manager",
    "marketing lead",
    "head of sales",
    "sales representative",
    "ceo",
    "developer",
    "data analyst",
    "consultant",
    "product manager",
];
const INDUSTRIES: &[&str] = &[
    "software",
    "manufacturing",
    "retail",
    "finance",
    "healthcare",
    "consulting",
    "education",
    "logistics",
];
const COMPANY_SIZES: &[u32] = &[1, 3, 8, 15, 45, 120, 350, 800, 2500, 12000];
const COUNTRIES: &[(&str, &str)] = &[
    ("DE", "Europe/Berlin"),
    ("DE", "Europe/Berlin"),
    ("DE", "Europe/Berlin"),
    ("AT", "Europe/Vienna"),
    ("CH", "Europe/Zurich"),
    ("NL", "Europe/Amsterdam"),
    ("FR", "Europe/Paris"),
    ("GB", "Europe/London"),
    ("US", "America/New_York"),
];
const AGE_BANDS: &[&str] = &["18-24", "25-34", "35-44", "45-54", "55-64", "65+"];
const PAGES: &[(&str, &str, Option<&str>)] = &[
    ("/", "Home", None),
    ("/pricing", "Pricing", None),
    ("/features", "Features", None),
    ("/blog/segments-of-one", "Segments of one", Some("blog")),
    (
        "/blog/buyer-personas",
        "Buyer personas in practice",
        Some("blog"),
    ),
    (
        "/blog/lead-scoring",
        "Lead scoring with decay",
        Some("blog"),
    ),
    (
        "/blog/rfm-analysis",
        "RFM analysis for small shops",
        Some("blog"),
    ),
    ("/docs/getting-started", "Getting started", Some("docs")),
    ("/customers", "Customer stories", None),
    ("/contact", "Contact", None),
];
const CLICK_TARGETS: &[&str] = &[
    "/trial",
    "/pricing",
    "/demo",
    "/contact",
    "/blog/segments-of-one",
    "/docs/getting-started",
];
const PRODUCTS: &[(&str, &str, f64, f64)] = &[
    ("segstream-starter-monthly", "subscription", 29.0, 49.0),
    ("segstream-pro-annual", "subscription", 390.0, 590.0),
    ("workshop-ticket", "training", 99.0, 249.0),
    ("segmentation-handbook", "books", 19.9, 39.9),
    ("consulting-day", "services", 900.0, 1400.0),
];
const DISCOUNT_CODES: &[&str] = &["WEBINAR20", "AUTUMN10", "WELCOME15"];
const SITE: &str = "https://segstream.dev";

/// Mailings: (day of week offset, campaign prefix, list).
const MAILINGS: &[(i64, &str, &str)] = &[
    (0, "newsletter", "newsletter"),
    (1, "webinar-invitation", "events"),
    (2, "blog-digest", "newsletter"),
    (4, "offer", "offers"),
];

struct CustomerSim<'a> {
    config: &'a FunnelConfig,
    period: &'a Period,
    rng: fastrand::Rng,
    /// Identity decisions (which device, whether a visit is logged in).
    ids: fastrand::Rng,
    customer: usize,
    out: &'a mut Vec<Draft>,
    subscribed: bool,
    /// Arrives as an anonymous visitor.
    anonymous: bool,
    /// From when the person is known (linked): `MIN` for known customers, `MAX` for a
    /// visitor who never registers.
    known_from: i64,
    /// Browses on a second device too.
    second_device: bool,
    /// When the second device's cookie is linked (`MAX`: not yet).
    second_linked: i64,
    /// The device of the current session.
    device: Device,
}

impl CustomerSim<'_> {
    fn chance(&mut self, p: f64) -> bool {
        self.rng.f64() < p
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.rng.usize(..items.len())]
    }

    /// A uniformly random time in `[lo, hi)`, or `lo` if the interval is empty.
    fn between(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            lo
        } else {
            self.rng.i64(lo..hi)
        }
    }

    fn emit(
        &mut self,
        ts: i64,
        kind: &'static str,
        properties: Option<Value>,
        traits: Option<Value>,
    ) {
        let ids = self.ids_at(ts, kind);
        self.emit_as(ts, ids, kind, properties, traits);
    }

    fn emit_as(
        &mut self,
        ts: i64,
        ids: Ids,
        kind: &'static str,
        properties: Option<Value>,
        traits: Option<Value>,
    ) {
        let epoch_timestamp = self.chance(0.05);
        self.out.push(Draft {
            ts,
            customer: self.customer,
            ids,
            kind,
            properties,
            traits,
            epoch_timestamp,
        });
    }

    /// The ids an event of this person carries at `ts`: the customer id once known; the
    /// session's cookie before (and beside it on web events half of the time, or always on
    /// a second device not linked yet).
    fn ids_at(&mut self, ts: i64, kind: &str) -> Ids {
        let web = matches!(kind, "page_view" | "click" | "ad_click");
        let device = self.device;
        if device == Device::Second && ts < self.second_linked {
            return Ids::Anonymous(Device::Second);
        }
        if ts < self.known_from {
            return Ids::Anonymous(device);
        }
        if web && self.ids.bool() {
            Ids::Both(device)
        } else {
            Ids::Known
        }
    }

    fn url(path: &str) -> String {
        format!("{SITE}{path}")
    }

    fn landing_url(&self) -> String {
        Self::url(&format!(
            "/webinar/{}",
            self.config.webinar_id.to_lowercase()
        ))
    }

    fn run(&mut self) {
        let start = self.period.start;
        let (first_seen, opt_in, crm) = self.identify();

        // The ad campaign runs until three hours before the webinar.
        let mut registered = false;
        if self.chance(0.6) {
            let click = self.between(
                first_seen + 10 * MINUTE,
                self.period.webinar_start - 3 * HOUR,
            );
            self.ad_click(click, "video-teaser");
            if self.chance(self.config.register_rate) {
                let at = click + self.between(2 * MINUTE, 2 * HOUR);
                if self.anonymous {
                    // The registration makes the visitor known: it carries the cookie
                    // beside the new customer id, and the CRM record follows.
                    self.known_from = at;
                    let crm_at = at + self.ids.i64(SECOND..30 * SECOND);
                    self.emit_as(crm_at, Ids::Known, "identify", None, Some(crm.clone()));
                }
                self.register(at);
                registered = true;
            } else if self.chance(0.35) {
                // The follow-up ad with the short video, for those who did not register.
                let again = click + self.between(20 * HOUR, 40 * HOUR);
                self.ad_click(again, "video-followup");
            }
        }
        if registered && self.chance(self.config.attend_rate) {
            self.attend();
        }
        if self.chance(0.3) {
            // An ad of some other campaign.
            let at = self.between(first_seen, self.period.end);
            let url = Self::url("/features");
            let props =
                json!({ "campaign": "brand-awareness", "url": url, "utm_source": "google" });
            self.emit(at, "ad_click", Some(props), None);
            let props = json!({
                "url": url,
                "title": "Features",
                "utm_source": "google",
                "utm_medium": "cpc",
                "utm_campaign": "brand-awareness",
            });
            let at = at + self.between(2 * SECOND, 15 * SECOND);
            self.emit(at, "page_view", Some(props), None);
        }

        // Browsing sessions: about 2.5 a week, on the second device now and then.
        let sessions = self.rng.u32(0..=((5 * self.period.days + 6) / 7) as u32);
        for _ in 0..sessions {
            let at = self.between(first_seen, self.period.end);
            if self.second_device && self.ids.bool() {
                self.device = Device::Second;
            }
            self.session(at);
            self.device = Device::First;
        }

        // Mail goes to known customers only (an anonymous visitor has left no address).
        if opt_in {
            self.mailings(start);
        }

        if self.chance(0.03) {
            let at = self.between(first_seen, self.period.end);
            let props =
                json!({ "plan": self.pick(&["starter", "pro"]), "seats": self.rng.u32(1..=20) });
            if at >= self.known_from {
                self.emit(at, "trial_started", Some(props), None);
            }
        }
        if self.chance(0.01) {
            let at = self.between(first_seen, self.period.end);
            let props = json!({ "event": "marketing-summit-2026", "format": "on-site" });
            if at >= self.known_from {
                self.emit(at, "event_participation", Some(props), None);
            }
        }
    }

    /// The initial CRM record (emitted at once for a known customer; an anonymous visitor's
    /// follows the registration). Returns when the customer was first seen, whether they
    /// accept marketing email, and the traits.
    fn identify(&mut self) -> (i64, bool, Value) {
        let at = self.between(self.period.start, self.period.start + 2 * HOUR);
        let size = self.pick(COMPANY_SIZES);
        let (country, time_zone) = self.pick(COUNTRIES);
        let status = if size >= 2500 && self.chance(0.4) {
            "key_account"
        } else if self.chance(0.2) {
            "customer"
        } else {
            "lead"
        };
        let opt_in = self.chance(0.85);
        let mut traits = Map::new();
        traits.insert("role".into(), self.pick(ROLES).into());
        traits.insert("industry".into(), self.pick(INDUSTRIES).into());
        traits.insert("company_size".into(), size.into());
        traits.insert("country".into(), country.into());
        traits.insert("time_zone".into(), time_zone.into());
        traits.insert("customer_status".into(), status.into());
        traits.insert("email_opt_in".into(), opt_in.into());
        if self.chance(0.7) {
            traits.insert("age_band".into(), self.pick(AGE_BANDS).into());
        }
        let traits = Value::Object(traits);
        if !self.anonymous {
            self.emit(at, "identify", None, Some(traits.clone()));
        }
        (at, opt_in, traits)
    }

    fn ad_click(&mut self, at: i64, ad: &str) {
        let url = self.landing_url();
        let campaign = self.config.campaign.clone();
        let source = self.pick(&["linkedin", "facebook", "xing"]);
        let props = json!({ "campaign": campaign, "url": url, "ad_id": ad, "utm_source": source });
        self.emit(at, "ad_click", Some(props), None);
        let view = at + self.between(2 * SECOND, 15 * SECOND);
        let props = json!({
            "url": url,
            "title": "Webinar: segments of one",
            "utm_source": source,
            "utm_medium": "paid_social",
            "utm_campaign": campaign,
            "utm_content": ad,
        });
        self.emit(view, "page_view", Some(props), None);
        // Most visitors look around a little before leaving.
        if self.chance(0.5) {
            let next = view + self.between(20 * SECOND, 3 * MINUTE);
            let props =
                json!({ "url": Self::url("/pricing"), "title": "Pricing", "referrer": url });
            self.emit(next, "page_view", Some(props), None);
        }
    }

    fn webinar_properties(&self) -> Map<String, Value> {
        let mut props = Map::new();
        props.insert("webinar_id".into(), self.config.webinar_id.clone().into());
        if let (Some(starts), Some(ends)) = (
            rfc3339_millis(self.period.webinar_start),
            rfc3339_millis(self.period.webinar_end),
        ) {
            props.insert("starts_at".into(), starts.into());
            props.insert("ends_at".into(), ends.into());
        }
        props
    }

    fn register(&mut self, at: i64) {
        let props = self.webinar_properties();
        // A visitor's registration carries the cookie beside the new customer id: a link.
        let ids = if self.anonymous {
            Ids::Both(Device::First)
        } else {
            Ids::Known
        };
        self.emit_as(
            at,
            ids,
            "webinar_registered",
            Some(Value::Object(props)),
            None,
        );
        if self.subscribed {
            let sent = at + self.between(5 * SECOND, 60 * SECOND);
            let props = json!({
                "campaign": "webinar-confirmation",
                "message_id": format!("m-{}-{}", self.customer + 1, sent),
                "list": "transactional",
            });
            self.emit(sent, "email_sent", Some(props), None);
        }
        let reminder = self.period.webinar_start - 6 * HOUR;
        if reminder > at {
            self.mail(
                reminder,
                format!("webinar-reminder-{}", self.config.webinar_id),
                "transactional",
            );
        }
    }

    fn attend(&mut self) {
        let joined = self.period.webinar_start + self.between(-3 * MINUTE, 12 * MINUTE);
        let mut props = self.webinar_properties();
        self.emit(
            joined,
            "webinar_attended",
            Some(Value::Object(props.clone())),
            None,
        );
        let left = if self.chance(0.7) {
            self.period.webinar_end + self.between(0, 5 * MINUTE)
        } else {
            self.between(joined + 5 * MINUTE, self.period.webinar_end)
        };
        let minutes = ((left - joined) / MINUTE).max(0);
        props.insert("minutes".into(), minutes.into());
        self.emit(left, "webinar_left", Some(Value::Object(props)), None);
        if self.chance(0.3) {
            let at = left + self.between(10 * MINUTE, 2 * DAY);
            self.purchase(at, true);
        }
    }

    fn session(&mut self, mut at: i64) {
        let mut referrer: Option<String> = None;
        for _ in 0..self.rng.u32(1..=4) {
            let (path, title, category) = self.pick(PAGES);
            let url = Self::url(path);
            let mut props = json!({ "url": url, "title": title });
            if let Some(category) = category {
                props["category"] = category.into();
            }
            if let Some(previous) = referrer.take() {
                props["referrer"] = previous.into();
            }
            self.emit(at, "page_view", Some(props), None);
            referrer = Some(url);
            at += self.between(15 * SECOND, 4 * MINUTE);
        }
        let clicks = if self.chance(0.8) {
            self.rng.u32(0..=2)
        } else {
            0
        };
        for _ in 0..clicks {
            let target = self.pick(CLICK_TARGETS);
            let mut props = json!({ "url": Self::url(target) });
            if let Some(referrer) = &referrer {
                props["referrer"] = referrer.clone().into();
            }
            self.emit(at, "click", Some(props), None);
            at += self.between(5 * SECOND, 2 * MINUTE);
        }
        if self.chance(0.25) {
            let at = at + self.between(MINUTE, 10 * MINUTE);
            self.purchase(at, false);
        }
    }

    fn purchase(&mut self, at: i64, after_webinar: bool) {
        let (product, category, low, high) = self.pick(PRODUCTS);
        let list_price = low + (high - low) * self.rng.f64();
        let discounted = after_webinar || self.chance(0.3);
        let factor = if discounted { 0.8 } else { 1.0 };
        let amount = (list_price * factor * 100.0).round() / 100.0;
        let mut props = json!({
            "amount": amount,
            "currency": "EUR",
            "product": product,
            "category": category,
            "order_id": format!("o-{}-{}", self.customer + 1, at),
            "quantity": 1,
        });
        if discounted {
            let code = if after_webinar {
                "WEBINAR20"
            } else {
                self.pick(DISCOUNT_CODES)
            };
            props["discount_code"] = code.into();
        }
        // A purchase needs an account: an anonymous visitor does not buy.
        let known = at >= self.known_from;
        if known {
            self.emit(at, "purchase", Some(props), None);
        }
        if self.chance(0.25) {
            let update = json!({ "customer_status": "customer" });
            let at = at + self.between(MINUTE, HOUR);
            if known {
                self.emit(at, "identify", None, Some(update));
            }
        }
    }

    fn mailings(&mut self, start: i64) {
        for day in 0..self.period.days {
            for &(weekday, prefix, list) in MAILINGS {
                if day % 7 != weekday || !self.subscribed {
                    continue;
                }
                let sent = start + day * DAY + 7 * HOUR + self.between(0, 30 * MINUTE);
                if prefix == "webinar-invitation" && sent >= self.period.webinar_start {
                    continue;
                }
                if sent < self.known_from {
                    continue;
                }
                self.mail(sent, format!("{prefix}-d{day}"), list);
            }
        }
    }

    fn mail(&mut self, sent: i64, campaign: String, list: &str) {
        let message_id = format!("m-{}-{}", self.customer + 1, sent);
        let base = json!({ "campaign": campaign, "message_id": message_id, "list": list });
        self.emit(sent, "email_sent", Some(base.clone()), None);
        if self.chance(0.01) {
            let at = sent + self.between(SECOND, MINUTE);
            self.emit(at, "email_bounce", Some(base), None);
            return;
        }
        if !self.chance(0.4) {
            return;
        }
        let opened = sent + self.between(5 * MINUTE, 20 * HOUR);
        self.emit(opened, "email_open", Some(base.clone()), None);
        if self.chance(0.25) {
            let clicked = opened + self.between(10 * SECOND, 5 * MINUTE);
            let target = if list == "events" {
                self.landing_url()
            } else {
                Self::url(self.pick(CLICK_TARGETS))
            };
            let mut props = base.clone();
            props["url"] = target.clone().into();
            // A click on the second device links its cookie (the mail's link carries the
            // customer id; the browser has the cookie).
            let on_second = self.second_device
                && self.second_linked == i64::MAX
                && clicked >= self.known_from
                && self.ids.bool();
            let device = if on_second {
                self.second_linked = clicked;
                self.emit_as(
                    clicked,
                    Ids::Both(Device::Second),
                    "email_click",
                    Some(props),
                    None,
                );
                Device::Second
            } else {
                self.emit(clicked, "email_click", Some(props), None);
                Device::First
            };
            let props = json!({
                "url": target,
                "utm_source": "newsletter",
                "utm_medium": "email",
                "utm_campaign": campaign,
            });
            let at = clicked + self.between(SECOND, 10 * SECOND);
            self.device = device;
            self.emit(at, "page_view", Some(props), None);
            self.device = Device::First;
        } else if list != "transactional" && self.chance(0.02) {
            let mut props = base;
            props["reason"] = "too many emails".into();
            let at = opened + self.between(10 * SECOND, 5 * MINUTE);
            self.emit(at, "unsubscribe", Some(props), None);
            self.subscribed = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn small() -> FunnelConfig {
        FunnelConfig {
            customers: 200,
            ..FunnelConfig::default()
        }
    }

    fn parse(event: &GeneratedEvent) -> Value {
        serde_json::from_str(&event.json).unwrap_or_else(|e| panic!("{e}: {}", event.json))
    }

    #[test]
    fn same_seed_same_output_other_seed_other_output() {
        let a = generate(&small());
        let b = generate(&small());
        assert_eq!(a, b);
        let c = generate(&FunnelConfig {
            seed: 43,
            ..small()
        });
        assert_ne!(a, c);
    }

    #[test]
    fn a_customer_behaves_the_same_whatever_the_population() {
        let of = |events: Vec<GeneratedEvent>| -> Vec<(i64, String)> {
            events
                .into_iter()
                .filter(|e| e.person == "c-000007")
                .map(|e| {
                    let mut v = parse(&e);
                    v.as_object_mut().unwrap().remove("event_id");
                    (e.timestamp_ms, v.to_string())
                })
                .collect()
        };
        let few = of(generate(&FunnelConfig {
            customers: 10,
            ..small()
        }));
        let many = of(generate(&small()));
        assert!(!few.is_empty());
        assert_eq!(few, many);
    }

    #[test]
    fn sorted_unique_and_inside_the_period() {
        let config = small();
        let events = generate(&config);
        assert!(events
            .windows(2)
            .all(|w| w[0].timestamp_ms <= w[1].timestamp_ms));
        let end = config.start_ms + i64::from(config.days) * DAY;
        assert!(events
            .iter()
            .all(|e| (config.start_ms..end).contains(&e.timestamp_ms)));
        let ids: BTreeSet<String> = events
            .iter()
            .map(|e| parse(e)["event_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids.len(), events.len());
        assert_eq!(
            parse(&events[0])["event_id"],
            format!("e-{}-0", config.seed)
        );
    }

    #[test]
    fn every_line_has_the_envelope() {
        let events = generate(&small());
        let (mut rfc3339, mut epoch) = (0, 0);
        for event in &events {
            let v = parse(event);
            for key in ["event_id", "type"] {
                assert!(
                    v[key].as_str().is_some_and(|s| !s.is_empty()),
                    "{key}: {}",
                    event.json
                );
            }
            // The key is the customer id, or the cookie when there is none.
            match (v["customer_id"].as_str(), v["anonymous_id"].as_str()) {
                (Some(c), _) => {
                    assert_eq!(c, event.person);
                    assert_eq!(c, event.key);
                }
                (None, Some(a)) => {
                    assert_eq!(a, event.key);
                    assert_eq!(a.len(), 16);
                }
                (None, None) => panic!("no id: {}", event.json),
            }
            assert!(event.person.starts_with("c-") && event.person.len() == 8);
            match &v["timestamp"] {
                Value::Number(n) => {
                    assert_eq!(n.as_i64(), Some(event.timestamp_ms));
                    epoch += 1;
                }
                Value::String(s) => {
                    assert_eq!(s, &rfc3339_millis(event.timestamp_ms).unwrap());
                    rfc3339 += 1;
                }
                other => panic!("timestamp {other}"),
            }
            if v["type"] == "identify" {
                assert!(v["traits"].as_object().is_some_and(|t| !t.is_empty()));
            }
        }
        assert!(
            epoch > 0 && rfc3339 > 10 * epoch,
            "{rfc3339} rfc3339, {epoch} epoch"
        );
    }

    #[test]
    fn rfc3339_formatting() {
        assert_eq!(
            rfc3339_millis(DEFAULT_START_MS).as_deref(),
            Some("2026-11-02T00:00:00.000Z")
        );
        assert_eq!(
            rfc3339_millis(DEFAULT_START_MS + 4 * DAY + 15 * HOUR + 1).as_deref(),
            Some("2026-11-06T15:00:00.001Z")
        );
    }

    #[test]
    fn the_mix_is_roughly_as_documented() {
        let events = generate(&FunnelConfig {
            customers: 2000,
            ..FunnelConfig::default()
        });
        let mut by_type: BTreeMap<String, usize> = BTreeMap::new();
        for event in &events {
            let kind = parse(event)["type"].as_str().unwrap().to_owned();
            let family = match kind.as_str() {
                k if k.starts_with("email_") || k == "unsubscribe" => "email",
                k if k.starts_with("webinar_") => "webinar",
                "page_view" | "click" | "ad_click" | "purchase" | "identify" => kind.as_str(),
                _ => "other",
            }
            .to_owned();
            *by_type.entry(family).or_default() += 1;
        }
        let total = events.len() as f64;
        let share = |k: &str| by_type.get(k).copied().unwrap_or(0) as f64 / total;
        let expected = [
            ("page_view", 0.36, 0.52),
            ("click", 0.08, 0.14),
            ("email", 0.18, 0.33),
            ("ad_click", 0.04, 0.07),
            ("webinar", 0.012, 0.05),
            ("purchase", 0.02, 0.05),
            ("identify", 0.03, 0.08),
            ("other", 0.001, 0.02),
        ];
        let mut report = String::new();
        eprintln!("mix of {total} events: {by_type:?}");
        for (kind, lo, hi) in expected {
            let s = share(kind);
            if !(lo..=hi).contains(&s) {
                report.push_str(&format!("{kind}: {s:.3} not in {lo}..={hi}\n"));
            }
        }
        assert!(report.is_empty(), "{report}{by_type:?} of {total}");
    }

    #[test]
    fn the_funnel_follows_the_rates() {
        let config = FunnelConfig {
            customers: 3000,
            ..FunnelConfig::default()
        };
        let events = generate(&config);
        let mut clicked = BTreeSet::new();
        let mut registered = BTreeSet::new();
        let mut attended = BTreeSet::new();
        let mut first_click: BTreeMap<String, i64> = BTreeMap::new();
        for event in &events {
            let v = parse(event);
            let c = event.person.clone();
            match v["type"].as_str().unwrap() {
                "ad_click" if v["properties"]["campaign"] == config.campaign.as_str() => {
                    first_click.entry(c.clone()).or_insert(event.timestamp_ms);
                    clicked.insert(c);
                }
                "webinar_registered" => {
                    assert_eq!(v["properties"]["webinar_id"], config.webinar_id.as_str());
                    assert_eq!(v["properties"]["starts_at"], "2026-11-06T15:00:00.000Z");
                    assert_eq!(v["properties"]["ends_at"], "2026-11-06T16:00:00.000Z");
                    let click = first_click[&c];
                    assert!(event.timestamp_ms > click && event.timestamp_ms <= click + 2 * HOUR);
                    registered.insert(c);
                }
                "webinar_attended" => {
                    assert!(registered.contains(&c));
                    attended.insert(c);
                }
                _ => {}
            }
        }
        let n = config.customers as f64;
        let click_rate = clicked.len() as f64 / n;
        let register_rate = registered.len() as f64 / clicked.len() as f64;
        let attend_rate = attended.len() as f64 / registered.len() as f64;
        assert!(
            (0.55..0.65).contains(&click_rate),
            "click rate {click_rate}"
        );
        assert!(
            (0.25..0.35).contains(&register_rate),
            "register rate {register_rate}"
        );
        assert!(
            (0.52..0.68).contains(&attend_rate),
            "attend rate {attend_rate}"
        );
    }

    #[test]
    fn short_periods_and_empty_populations_work() {
        assert!(generate(&FunnelConfig {
            customers: 0,
            ..FunnelConfig::default()
        })
        .is_empty());
        for days in [0, 1, 2] {
            let config = FunnelConfig {
                customers: 50,
                days,
                ..FunnelConfig::default()
            };
            let events = generate(&config);
            assert!(!events.is_empty());
            let end = config.start_ms + i64::from(days.max(1)) * DAY;
            assert!(events.iter().all(|e| e.timestamp_ms < end));
        }
    }
}
