//! `micro broker` end to end: ephemeral messages from one CLI process to another.

mod common;

use std::time::Duration;

use common::Server;

#[test]
fn published_messages_reach_a_subscriber_in_order() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    let numbers = common::three_broker_messages(home.path(), "greetings", |n| {
        server.ok(&["broker", "publish", "greetings", "hello", &n.to_string()]);
    });
    assert!(numbers.windows(2).all(|pair| pair[1] == pair[0] + 1), "in publish order: {numbers:?}");

    // Refused by the server's topic check (a server error, exit 127), with the rule in the message.
    let bad = server.micro(&["broker", "publish", "no spaces/allowed", "x"]);
    assert_eq!(bad.status.code(), Some(127), "{}", common::stderr(&bad));
    assert_eq!(
        common::stderr(&bad).trim(),
        r#"Topic "no spaces/allowed" may only contain A-Z a-z 0-9 . _ -"#
    );
}

/// A `micro broker subscribe` process whose printed lines are collected as they arrive.
struct Subscriber {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Subscriber {
    fn start(home: &std::path::Path, args: &[&str]) -> Self {
        use std::io::BufRead;
        let mut child = common::micro_cmd(home)
            .args(["broker", "subscribe"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("micro broker subscribe starts");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        let stdout = child.stdout.take().expect("stdout is piped");
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The `job <n>` numbers it printed.
    fn jobs(&self) -> Vec<u32> {
        self.lines().iter().filter_map(|line| line.strip_prefix("job ")?.parse().ok()).collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two subscriber processes in one queue group share a topic: each message reaches exactly one
/// of them, taking turns; a plain subscriber beside them still gets every message.
#[test]
fn a_queue_group_shares_messages_between_processes() {
    const JOBS: u32 = 20;
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    let members = [
        Subscriber::start(home.path(), &["work", "--queue", "workers"]),
        Subscriber::start(home.path(), &["work", "--queue", "workers"]),
    ];
    let everything = Subscriber::start(home.path(), &["work"]);
    // The broker keeps nothing: probe until every subscriber is attached (each member has had a
    // probe, and so has the plain subscriber).
    let ready = common::eventually(Duration::from_secs(30), || {
        server.ok(&["broker", "publish", "work", "probe"]);
        members.iter().all(|member| !member.lines().is_empty()) && !everything.lines().is_empty()
    });
    assert!(
        ready,
        "the subscribers never attached: {:?}",
        members.iter().map(Subscriber::lines).collect::<Vec<_>>()
    );

    for n in 0..JOBS {
        server.ok(&["broker", "publish", "work", "job", &n.to_string()]);
    }
    let total = || members.iter().map(|member| member.jobs().len()).sum::<usize>();
    assert!(
        common::eventually(Duration::from_secs(30), || everything.jobs().len() == JOBS as usize
            && total() >= JOBS as usize),
        "every job delivered: {:?} / {:?}",
        members.iter().map(Subscriber::jobs).collect::<Vec<_>>(),
        everything.jobs()
    );
    // A second delivery would follow the first at once; a second's quiet is plenty to see one.
    std::thread::sleep(Duration::from_secs(1));
    let shares: Vec<Vec<u32>> = members.iter().map(Subscriber::jobs).collect();
    let mut all = shares.concat();
    all.sort_unstable();
    assert_eq!(all, (0..JOBS).collect::<Vec<_>>(), "each job reached exactly one member: {shares:?}");
    assert_eq!(
        shares.iter().map(Vec::len).collect::<Vec<_>>(),
        [JOBS as usize / 2; 2],
        "the members take turns: {shares:?}"
    );
    assert_eq!(
        everything.jobs(),
        (0..JOBS).collect::<Vec<_>>(),
        "a plain subscriber gets them all, in order"
    );
}
