//! What `cargo test` said: libtest's output is echoed as it comes and counted, so that
//! `cargo xtask test` can close with how many tests ran and which were not run, and why.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// Tests counted over every `cargo test` run of the suite.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Tests that ran and passed.
    pub passed: u64,
    /// Tests that ran and failed.
    pub failed: u64,
    /// Tests not run, with the reason (`#[ignore = "reason"]`, or what the xtask found missing).
    pub not_run: Vec<(String, String)>,
}

impl Tally {
    /// Counts one line of libtest output.
    pub fn read_line(&mut self, line: &str) {
        if let Some(counts) = line.strip_prefix("test result: ") {
            for part in counts.split(';') {
                let mut words = part.split_whitespace().rev();
                let (Some(what), Some(number)) = (words.next(), words.next()) else {
                    continue;
                };
                let Ok(number) = number.parse::<u64>() else {
                    continue;
                };
                match what {
                    "passed" => self.passed += number,
                    "failed" => self.failed += number,
                    _ => {}
                }
            }
        } else if let Some(rest) = line.strip_prefix("test ")
            && let Some((name, outcome)) = rest.split_once(" ... ")
            && let Some(reason) = outcome.strip_prefix("ignored")
        {
            let reason = reason.trim_start_matches(',').trim();
            let reason = if reason.is_empty() {
                "#[ignore]"
            } else {
                reason
            };
            self.not_run
                .push((name.trim().to_string(), reason.to_string()));
        }
    }

    /// Records a test the xtask left out, unless libtest already reported it.
    pub fn not_run(&mut self, name: &str, reason: &str) {
        match self.not_run.iter_mut().find(|(test, _)| test == name) {
            // The xtask's reason says what this machine lacks; the attribute only what is needed.
            Some(entry) => entry.1 = reason.to_string(),
            None => self.not_run.push((name.to_string(), reason.to_string())),
        }
    }

    /// Runs `cmd` (a `cargo test`), echoing its standard output and counting it; fails when the
    /// command does.
    pub fn run(&mut self, cmd: &mut Command) -> Result<()> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("could not start {cmd:?}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading cargo test output")?;
            println!("{line}");
            self.read_line(&line);
        }
        let status = child.wait()?;
        if !status.success() {
            bail!("{cmd:?} failed with {status}");
        }
        Ok(())
    }

    /// The closing line: how many ran, how many were not run and why.
    pub fn summary(&self) -> String {
        let mut reasons: Vec<(&str, usize)> = Vec::new();
        for (_, reason) in &self.not_run {
            match reasons.iter_mut().find(|(r, _)| *r == reason) {
                Some(entry) => entry.1 += 1,
                None => reasons.push((reason, 1)),
            }
        }
        let why: Vec<String> = reasons
            .iter()
            .map(|(reason, count)| format!("{count} because {reason}"))
            .collect();
        let mut line = format!(
            "{} tests ran ({} passed, {} failed); {} not run",
            self.passed + self.failed,
            self.passed,
            self.failed,
            self.not_run.len()
        );
        if !why.is_empty() {
            line.push_str(&format!(" ({})", why.join("; ")));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_results_and_ignored_tests() {
        let mut tally = Tally::default();
        for line in [
            "running 3 tests",
            "test a::works ... ok",
            "test monitors::uhyve_boots_to_ready ... ignored, needs KVM",
            "test plain ... ignored",
            "test result: ok. 1 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.01s",
            "test result: FAILED. 4 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
        ] {
            tally.read_line(line);
        }
        assert_eq!(tally.passed, 5);
        assert_eq!(tally.failed, 1);
        tally.not_run("monitors::uhyve_boots_to_ready", "KVM is nested kvm-pvm");
        tally.not_run("deploy_forms::tap", "no /dev/net/tun");
        assert_eq!(
            tally.not_run,
            vec![
                (
                    "monitors::uhyve_boots_to_ready".to_string(),
                    "KVM is nested kvm-pvm".to_string()
                ),
                ("plain".to_string(), "#[ignore]".to_string()),
                (
                    "deploy_forms::tap".to_string(),
                    "no /dev/net/tun".to_string()
                ),
            ]
        );
        assert_eq!(
            tally.summary(),
            "6 tests ran (5 passed, 1 failed); 3 not run (1 because KVM is nested kvm-pvm; \
             1 because #[ignore]; 1 because no /dev/net/tun)"
        );
    }
}
