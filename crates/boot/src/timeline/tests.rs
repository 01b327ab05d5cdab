use super::*;

/// What LAN hosts send ends up in details (a Range header, a file name); before, 3000
/// requests with a 64 KB Range header from 20 hosts kept 254 MiB. Every detail is bounded,
/// and so are all timelines together, however many machines a flood invents.
#[test]
fn details_and_all_timelines_together_are_bounded() {
    let timeline = Timeline::default();
    let huge = format!("debian/linux over HTTP ({})", "bytes=0-1,".repeat(6500));
    for round in 0..3000u32 {
        let host = (round % 20) as u8;
        timeline.record(Mac([2, 0, 0, 0, 0, host]), Step::FileFetched, huge.clone());
    }
    let (events, bytes) = timeline.footprint();
    assert!(
        bytes <= events * DETAIL_MAX,
        "{bytes} bytes in {events} events"
    );
    assert!(bytes < 2 << 20, "{bytes} bytes kept for 20 machines");
    let kept = timeline.events(&Mac([2, 0, 0, 0, 0, 1]));
    assert!(
        kept[0]
            .detail
            .starts_with("debian/linux over HTTP (bytes=0-1,")
    );
    assert!(kept[0].detail.ends_with('…'), "a cut detail says so");
    // Many machines, each with a full timeline: the total stays within the budget.
    for i in 0..(MACHINES as u32) {
        let b = i.to_be_bytes();
        for _ in 0..40 {
            timeline.record(
                Mac([2, 1, b[0], b[1], b[2], b[3]]),
                Step::FileFetched,
                huge.clone(),
            );
        }
    }
    let (events, bytes) = timeline.footprint();
    assert!(events <= TOTAL_EVENTS, "{events} events kept");
    assert!(bytes <= TOTAL_EVENTS * DETAIL_MAX);
}

#[test]
fn bounded_in_machines() {
    let timeline = Timeline::default();
    for i in 0..MACHINES as u32 + 10 {
        let b = i.to_be_bytes();
        timeline.record(
            Mac([2, 0, b[0], b[1], b[2], b[3]]),
            Step::DhcpRequest,
            String::new(),
        );
    }
    assert_eq!(timeline.machines.lock().unwrap().steps.len(), MACHINES);
    // The first machines, heard from longest ago, are the ones forgotten.
    assert!(timeline.events(&Mac([2, 0, 0, 0, 0, 0])).is_empty());
    let last = (MACHINES as u32 + 9).to_be_bytes();
    assert_eq!(
        timeline
            .events(&Mac([2, 0, last[0], last[1], last[2], last[3]]))
            .len(),
        1
    );
}

#[test]
fn bounded_per_machine() {
    let timeline = Timeline::default();
    let mac = Mac([2, 0, 0, 0, 0, 1]);
    for i in 0..PER_MACHINE + 5 {
        timeline.record(mac, Step::DhcpRequest, i.to_string());
    }
    let events = timeline.events(&mac);
    assert_eq!(events.len(), PER_MACHINE);
    assert_eq!(events[0].detail, "5");
}

fn attempt(steps: &[(Step, &str)], start: SystemTime) -> Vec<TimelineEvent> {
    steps
        .iter()
        .enumerate()
        .map(|(i, (step, detail))| TimelineEvent {
            at: start + Duration::from_secs(i as u64),
            step: *step,
            detail: detail.to_string(),
        })
        .collect()
}

#[test]
fn diagnosis_of_each_stop() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let later = t0 + Duration::from_secs(600);
    assert_eq!(diagnose(&[], later).verdict, Verdict::NeverSeen);

    let offer_only = attempt(
        &[
            (Step::DhcpRequest, "DISCOVER on port 67"),
            (
                Step::OfferSent,
                "OFFER with boot file 'undionly.kpxe' to 10.0.0.5:68",
            ),
        ],
        t0,
    );
    let d = diagnose(&offer_only, later);
    assert_eq!(d.verdict, Verdict::Stopped);
    assert!(d.summary.contains("never requested"), "{d:?}");
    assert!(d.advice.contains("firewall") && d.advice.contains("competing PXE server"));
    // The same steps seconds ago: the firmware may still be on its way.
    let d = diagnose(&offer_only, t0 + Duration::from_secs(3));
    assert_eq!(d.verdict, Verdict::InProgress);
    assert!(d.advice.is_empty());

    let failed = attempt(
        &[
            (Step::DhcpRequest, ""),
            (Step::OfferSent, ""),
            (Step::TftpFailed, "undionly.kpxe: timed out"),
        ],
        t0,
    );
    let d = diagnose(&failed, t0 + Duration::from_secs(5));
    assert_eq!(d.verdict, Verdict::Stopped);
    assert!(d.advice.contains("--single-port"), "{d:?}");

    let booted = attempt(
        &[
            (Step::DhcpRequest, ""),
            (Step::OfferSent, ""),
            (Step::TftpTransfer, "undionly.kpxe: completed"),
            (Step::DhcpRequest, ""),
            (
                Step::OfferSent,
                "with boot file 'http://10.0.0.1:8080/boot/x.ipxe'",
            ),
            (Step::ScriptFetched, "profile 'alpha' (linux)"),
            (Step::FileFetched, "alpha/vmlinuz over HTTP"),
        ],
        t0,
    );
    assert_eq!(diagnose(&booted, later).verdict, Verdict::Booted);

    // A new attempt after a good boot is judged on its own steps.
    let mut again = booted.clone();
    again.extend(attempt(
        &[
            (Step::DhcpRequest, ""),
            (Step::NotAnswered, "unknown machine, ignored"),
        ],
        t0 + Duration::from_secs(100),
    ));
    let d = diagnose(&again, later);
    assert_eq!(d.verdict, Verdict::Stopped);
    assert!(d.summary.contains("did not answer"), "{d:?}");

    let local = attempt(
        &[
            (Step::DhcpRequest, ""),
            (Step::ScriptFetched, "profile 'disk' (local-disk)"),
        ],
        t0,
    );
    assert_eq!(diagnose(&local, later).verdict, Verdict::Booted);
}

#[test]
fn live_subscribers_and_recent_steps() {
    let timeline = Timeline::default();
    let mut live = timeline.subscribe();
    let mac = Mac([2, 0, 0, 0, 0, 9]);
    timeline.record(mac, Step::OfferSent, "x".into());
    timeline.record(mac, Step::TftpTransfer, "y".into());
    assert_eq!(live.try_recv().map(|e| e.event.step), Ok(Step::OfferSent));
    let recent = timeline.recent();
    assert_eq!(recent[0].event.step, Step::TftpTransfer);
    assert_eq!(recent.len(), 2);
}
