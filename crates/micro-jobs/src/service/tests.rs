use std::sync::Mutex;

use micro_store::memory::MemoryStore;

use super::*;
use crate::job::{Action, Owner, When};

/// Records every action performed; fails those whose data says so.
#[derive(Default)]
struct Recorder {
    performed: Mutex<Vec<(String, Run)>>,
}

#[async_trait]
impl Actions for Recorder {
    async fn perform(&self, job: &Job, run: &Run) -> Result<(), String> {
        self.performed.lock().unwrap().push((job.name.clone(), run.clone()));
        if job.data.contains("fail") { Err("the endpoint said no".into()) } else { Ok(()) }
    }
}

fn servers(store: &Arc<MemoryStore>) -> (Arc<Jobs>, Arc<Jobs>, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let a = Arc::new(Jobs::new(store.clone(), recorder.clone(), "a"));
    let b = Arc::new(Jobs::new(store.clone(), recorder.clone(), "b"));
    (a, b, recorder)
}

fn job(name: &str, when: When, data: &str, created: u64) -> Job {
    Job {
        name: name.into(),
        namespace: "foo".into(),
        when,
        action: Action::Publish { topic: "ticks".into() },
        data: data.into(),
        missed: Missed::Skip,
        owner: Owner { id: "bob".into(), issuer: "foo".into() },
        created,
    }
}

const SEC: u64 = 1000;

#[test]
fn plans_fire_on_time_and_treat_missed_firings_by_policy() {
    let t0 = 1_767_225_600_000;
    let every = Schedule::Every { period: SEC, anchor: t0 };
    let fire = |at| Firing { scheduled: at, trigger: Trigger::Schedule, missed: 0, through: at };

    // On time: the one due firing.
    let due = every.due(t0, t0 + SEC + 150).unwrap();
    assert_eq!(plan(&every, due, t0 + SEC + 150, Missed::Skip), [fire(t0 + SEC)]);
    // A short stall (within MAX_LATENESS): every firing still runs on its own.
    let due = every.due(t0, t0 + 3 * SEC).unwrap();
    assert_eq!(
        plan(&every, due, t0 + 3 * SEC, Missed::Skip),
        [fire(t0 + SEC), fire(t0 + 2 * SEC), fire(t0 + 3 * SEC)]
    );

    // Every server was down for 60 s: skip drops what is older than MAX_LATENESS...
    let now = t0 + 60 * SEC;
    let due = every.due(t0, now).unwrap();
    let recent: Vec<Firing> = (51..=60).map(|s| fire(t0 + s * SEC)).collect();
    assert_eq!(plan(&every, due, now, Missed::Skip), recent);
    // ...and catch-up makes up for all of it with one firing, keyed by the first missed one.
    let caught = plan(&every, due, now, Missed::CatchUp);
    assert_eq!(
        caught[0],
        Firing { scheduled: t0 + SEC, trigger: Trigger::CatchUp, missed: 50, through: t0 + 50 * SEC }
    );
    assert_eq!(&caught[1..], recent.as_slice());

    // A one-off missed by more than MAX_LATENESS fires only under catch-up.
    let at = Schedule::At(t0);
    let due = at.due(t0 - 1, now).unwrap();
    assert!(plan(&at, due, now, Missed::Skip).is_empty());
    assert_eq!(plan(&at, due, now, Missed::CatchUp).len(), 1);
}

#[tokio::test]
async fn one_server_wins_each_claim_and_a_dead_servers_claim_is_taken_over() {
    let store = Arc::new(MemoryStore::new());
    let (a, b, recorder) = servers(&store);
    let now = micro_core::time::unix_millis();
    let ticks = a.create(job("ticks", When::Every(SEC), "", now)).await.unwrap();
    let firing = Firing { scheduled: now + SEC, trigger: Trigger::Schedule, missed: 0, through: now + SEC };

    assert_eq!(a.claim(&ticks, firing).await.unwrap(), Claim::Won);
    assert_eq!(b.claim(&ticks, firing).await.unwrap(), Claim::Held, "a holds it while it runs");
    let run = a.perform(&ticks, firing).await.unwrap();
    assert_eq!((run.outcome, run.server.as_str()), (Outcome::Ok, "a"));
    assert_eq!(b.claim(&ticks, firing).await.unwrap(), Claim::Done, "recorded: nobody fires it again");
    assert_eq!(a.claim(&ticks, firing).await.unwrap(), Claim::Done);
    assert_eq!(recorder.performed.lock().unwrap().len(), 1);

    // A server that claimed and died: its claim expires, and then another takes the firing over.
    let later = Firing { scheduled: now + 2 * SEC, ..firing };
    let key = run_key("foo", "ticks", later.scheduled, Trigger::Schedule);
    let dead = Record::new(key, encode(&a.started(&ticks, later))).with_expiry(Duration::from_millis(30));
    assert!(store.create(DATABASE, RUNS_TABLE, dead).await.unwrap());
    assert_eq!(b.claim(&ticks, later).await.unwrap(), Claim::Held);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match b.claim(&ticks, later).await.unwrap() {
            Claim::Won => break,
            Claim::Held => {
                assert!(tokio::time::Instant::now() < deadline, "the dead server's claim never expired");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Claim::Done => panic!("nobody recorded it"),
        }
    }
    assert_eq!(b.perform(&ticks, later).await.unwrap().server, "b");
    assert_eq!(a.cursor(&ticks).await.unwrap(), later.scheduled, "servers resume after the last run");
}

#[tokio::test]
async fn jobs_are_created_listed_run_and_deleted_within_limits() {
    let store = Arc::new(MemoryStore::new());
    let (a, b, _) = servers(&store);
    let now = micro_core::time::unix_millis();
    a.create(job("ok", When::Every(60 * SEC), "{}", now)).await.unwrap();
    a.create(job("broken", When::Every(60 * SEC), r#"{"fail":true}"#, now)).await.unwrap();
    let taken = b.create(job("ok", When::Every(SEC), "", now)).await.unwrap_err();
    assert!(matches!(taken, JobError::Exists(_)), "{taken}");
    let names: Vec<String> = b.list("foo").await.unwrap().into_iter().map(|job| job.name).collect();
    assert_eq!(names, ["broken", "ok"]);
    assert!(b.list("bar").await.unwrap().is_empty(), "namespaces are apart");

    let run = b.run_now("foo", "ok").await.unwrap();
    assert_eq!((run.outcome, run.trigger, run.server.as_str()), (Outcome::Ok, Trigger::Manual, "b"));
    let failed = a.run_now("foo", "broken").await.unwrap();
    assert_eq!((failed.outcome, failed.error.as_str()), (Outcome::Failed, "the endpoint said no"));
    assert_eq!(a.history("foo", "broken", 0).await.unwrap(), [failed]);
    assert_eq!(
        a.cursor(&a.get("foo", "ok").await.unwrap()).await.unwrap(),
        now,
        "manual runs move no cursor"
    );

    // History is bounded: the newest HISTORY_KEPT runs stay.
    for _ in 0..HISTORY_KEPT + 5 {
        a.run_now("foo", "ok").await.unwrap();
    }
    let history = a.history("foo", "ok", 0).await.unwrap();
    assert_eq!(history.len(), HISTORY_KEPT);
    assert!(history.windows(2).all(|pair| pair[0].scheduled >= pair[1].scheduled), "newest first");
    assert_eq!(a.history("foo", "ok", 3).await.unwrap().len(), 3);

    a.delete("foo", "ok").await.unwrap();
    assert_eq!(a.get("foo", "ok").await.unwrap_err(), JobError::NotFound);
    assert_eq!(a.delete("foo", "ok").await.unwrap_err(), JobError::NotFound);
    assert!(a.run_keys("foo", "ok").await.unwrap().is_empty(), "its history went with it");
    assert_eq!(a.run_now("foo", "ok").await.unwrap_err(), JobError::NotFound);

    for n in 1..MAX_JOBS_PER_NAMESPACE {
        a.create(job(&format!("j{n}"), When::Every(60 * SEC), "", now)).await.unwrap();
    }
    let full = a.create(job("one-more", When::Every(60 * SEC), "", now)).await.unwrap_err();
    assert!(matches!(full, JobError::Limit(_)), "{full}");
    assert!(a.get("foo", "one-more").await.is_err(), "a refused create changes nothing");
}

#[tokio::test]
async fn two_schedulers_catch_up_once_for_every_missed_firing() {
    let store = Arc::new(MemoryStore::new());
    let (a, b, recorder) = servers(&store);
    // Created a minute ago, while (as far as the store knows) no server ran.
    let created = micro_core::time::unix_millis() - 60 * SEC;
    let mut catching = job("catching", When::Every(7 * SEC), "", created - 10 * SEC);
    catching.missed = Missed::CatchUp;
    a.create(catching).await.unwrap();
    let _a = a.spawn_scheduler();
    let _b = b.spawn_scheduler();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let catch_ups = || {
        recorder.performed.lock().unwrap().iter().filter(|(_, run)| run.trigger == Trigger::CatchUp).count()
    };
    while catch_ups() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no catch-up run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Give the other server's scheduler a few ticks to try the same (and lose).
    tokio::time::sleep(TICK * 5).await;
    let performed = recorder.performed.lock().unwrap().clone();
    let caught: Vec<&Run> =
        performed.iter().map(|(_, run)| run).filter(|run| run.trigger == Trigger::CatchUp).collect();
    assert_eq!(caught.len(), 1, "one catch-up across both servers: {performed:?}");
    assert!(caught[0].missed >= 7, "it stands for the missed firings: {:?}", caught[0]);
    let mut scheduled: Vec<u64> = performed.iter().map(|(_, run)| run.scheduled).collect();
    let total = scheduled.len();
    scheduled.dedup();
    assert_eq!(scheduled.len(), total, "no firing ran twice: {performed:?}");
}
