//! The evaluation at a phase end or its gate (`[evaluation].phases`, and the phase an exhausted budget
//! ended, which is the session's last; a signal's graceful stop does not wait for one): after the phase checks, the hidden
//! acceptance suite, coverage, documentation coverage, the security scan and the performance
//! figures are measured off the session task ([`eval::evaluation::complete`]); the result comes
//! back as `Event::EvaluationFinished` while other events are served. It goes to `session.db`
//! (`evaluations`), the phase's record (checkpoints' `test_results`) and the reports. Hidden
//! results are a measurement, never a failure the recovery table acts on: agents cannot see
//! the suite.

use super::*;

impl Session {
    /// Evaluate the workspace for phase `phase_idx` (at its end or its gate) with the phase's
    /// checks so far; bounded by `[limits].max_test_runtime_min` per command and for the suite
    /// (wall). None when a signal cancelled it. Nothing is recorded here.
    pub(super) async fn evaluate(
        &mut self,
        phase_idx: usize,
        checks: Vec<CheckRow>,
    ) -> Result<Option<Box<eval::evaluation::Evaluation>>> {
        let phase = self.prepared.config.phases[phase_idx].name.clone();
        let timeout =
            Duration::from_secs_f64(self.prepared.config.raw.limits.max_test_runtime_min * 60.0);
        let runs_dir = self.prepared.dir.parent().unwrap_or(Path::new("."));
        let ctx = eval::evaluation::Context {
            project_type: self.prepared.config.raw.session.project_type.clone(),
            spec: self.prepared.spec.clone(),
            project_dir: self.workspace.clone(),
            out_dir: self.prepared.dir.join("evaluations").join(&phase),
            venv_root: eval::provision::venv_root(runs_dir),
            tools_root: eval::provision::tools_root(runs_dir),
            install_tools: self.prepared.config.raw.evaluation.install_tools,
            timeout,
            acceptance: self.prepared.config.raw.evaluation.acceptance,
            fail_fast: false,
        };
        let cancel = CancellationToken::new();
        let cancel_for_task = cancel.clone();
        let events = self.events_tx.clone();
        let phase_name = phase.clone();
        tokio::spawn(async move {
            let evaluation = tokio::select! {
                evaluation = eval::evaluation::complete(&ctx, &phase_name, checks) => Some(evaluation),
                _ = cancel_for_task.cancelled() => None,
            };
            let _ = events
                .send(Event::EvaluationFinished(Box::new(evaluation)))
                .await;
        });
        self.mode = ticks::Mode::Checking;
        tracing::info!(message = "evaluation started", phase = %phase);
        let evaluation = self
            .wait_for_job(&cancel, |event| match event {
                Event::EvaluationFinished(evaluation) => Ok(*evaluation),
                other => Err(other),
            })
            .await?;
        self.mode = ticks::Mode::Running;
        Ok(evaluation.map(Box::new))
    }

    /// Record `evaluation` as phase `phase_idx`'s: `session.db` (`evaluations`), an event, the
    /// phase's record and the session's newest evaluation.
    pub(super) fn record_evaluation(
        &mut self,
        phase_idx: usize,
        evaluation: Box<eval::evaluation::Evaluation>,
    ) -> Result<()> {
        let phase = self.prepared.config.phases[phase_idx].name.clone();
        let document = serde_json::to_string(&evaluation)?;
        self.store
            .insert_evaluation(&phase, self.clock.session_secs(), &document)?;
        let acceptance = &evaluation.acceptance;
        self.event(
            "evaluation",
            None,
            Some(&phase),
            None,
            serde_json::json!({
                "acceptance": acceptance.status,
                "reason": acceptance.reason,
                "passed": acceptance.passed,
                "total": acceptance.total,
                "bugs": evaluation.bugs,
                "test_coverage": evaluation.test_coverage.value,
                "wall_secs": evaluation.wall_secs,
            }),
        )?;
        tracing::info!(
            message = "evaluation",
            phase = %phase,
            acceptance = %acceptance.status,
            passed = acceptance.passed,
            total = acceptance.total,
            bugs_critical = evaluation.bugs.critical,
            reason = acceptance.reason.as_deref().unwrap_or(""),
            wall_secs = evaluation.wall_secs
        );
        self.phases[phase_idx].evaluation = Some(evaluation.clone());
        self.evaluation = Some(evaluation);
        Ok(())
    }
}
