//! One SSH connection: authentication, roles, channel requests (spec 1.5, 1.6), and the tasks
//! that serve a channel once it starts (console exec, interactive shell, SFTP, an agent's
//! `report`).
//!
//! A `Channel<Msg>` has a bounded queue that russh fills with every request and data packet;
//! left unread it blocks the whole session (spike-russh.md section 10, item 8). So a channel is
//! read from the moment it opens: until its exec/shell/subsystem starts (at most
//! [`MAX_PENDING_REQUESTS`] requests), by a task that drops what the client sends on it
//! ([`Unstarted`]), then by whatever serves it, until it ends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::report::Report;
use russh::keys::ssh_key::HashAlg;
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelMsg};
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

use crate::console::shell::{self, Editor, Event, LineSplitter, Piped};
use crate::console::{self, MAX_LINE, Outcome};
use crate::keys::{Restrictions, Role};
use crate::server::Shared;
use crate::store::Actor;

/// Requests refused on a channel that has not started before we close it.
const MAX_PENDING_REQUESTS: u32 = 64;
/// Session channels open at once on one connection.
const MAX_CHANNELS: usize = 8;
/// Reports of one connection are recorded at most this often (each is a synced transaction;
/// an agent sends one when its state changes, and every 10 minutes).
const REPORT_PACE: Duration = Duration::from_secs(1);

/// Terminal size given by `pty-req`.
#[derive(Debug, Clone, Copy)]
struct Pty {
    cols: u32,
}

struct PendingChannel {
    channel: Option<Unstarted>,
    pty: Option<Pty>,
    started: bool,
    requests: u32,
}

/// A channel open but not started, read by a task that drops what arrives on it: a client
/// has no business sending data before its request is answered (OpenSSH does not), and
/// unread, a few such messages (russh's `channel_buffer_size`) would block the session.
struct Unstarted {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Channel<Msg>>,
}

impl Unstarted {
    fn watch(mut channel: Channel<Msg>) -> Unstarted {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut dropped = 0;
            let discard = async {
                while let Some(msg) = channel.wait().await {
                    dropped += data_len(&msg);
                }
            };
            // Also ends when the connection (holding `stop`) is gone.
            tokio::select! {
                biased;
                _ = stopped => {}
                () = discard => {}
            }
            dropped += drop_queued(&mut channel);
            if dropped > 0 {
                tracing::debug!(
                    bytes = dropped,
                    "data sent before the channel started: dropped"
                );
            }
            channel
        });
        Unstarted { stop, task }
    }

    /// Stops the task and hands the channel over. Called from the request's handler, while
    /// russh's session loop queues nothing more, so that what is dropped is exactly what
    /// came before the request.
    async fn take(self) -> Option<Channel<Msg>> {
        let _ = self.stop.send(());
        self.task.await.ok()
    }
}

/// Drops the messages already queued on `channel`, without waiting for more; returns the
/// bytes of data among them.
fn drop_queued(channel: &mut Channel<Msg>) -> usize {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut dropped = 0;
    while let std::task::Poll::Ready(Some(msg)) = std::pin::pin!(channel.wait()).poll(&mut cx) {
        dropped += data_len(&msg);
    }
    dropped
}

fn data_len(msg: &ChannelMsg) -> usize {
    match msg {
        ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } => data.len(),
        _ => 0,
    }
}

/// The russh handler of one connection.
pub struct Connection {
    shared: Arc<Shared>,
    peer: SocketAddr,
    authed_tx: Option<oneshot::Sender<()>>,
    /// Running consoles and transfers of this connection (shutdown waits for zero).
    busy: Arc<AtomicUsize>,
    /// Cancelled when a session of this connection is stuck beyond repair: the connection
    /// is to be dropped.
    stuck: CancellationToken,
    login: Option<(Role, Actor)>,
    /// What the login key's options forbid (see `keys`).
    restrictions: Restrictions,
    channels: HashMap<ChannelId, PendingChannel>,
    /// When the next `report` of this connection may be recorded.
    next_report: tokio::time::Instant,
}

impl Connection {
    pub fn new(
        shared: Arc<Shared>,
        peer: SocketAddr,
        authed_tx: oneshot::Sender<()>,
        busy: Arc<AtomicUsize>,
        stuck: CancellationToken,
    ) -> Connection {
        Connection {
            shared,
            peer,
            authed_tx: Some(authed_tx),
            busy,
            stuck,
            login: None,
            restrictions: Restrictions::default(),
            channels: HashMap::new(),
            next_report: tokio::time::Instant::now(),
        }
    }

    fn role(&self) -> Option<Role> {
        self.login.as_ref().map(|(role, _)| *role)
    }

    /// Takes the channel for a request that starts it, if the request may start it.
    async fn start(&mut self, id: ChannelId) -> Option<(Channel<Msg>, Option<Pty>)> {
        let pending = self.channels.get_mut(&id)?;
        if pending.started {
            return None;
        }
        let unstarted = pending.channel.take()?;
        pending.started = true;
        let pty = pending.pty;
        Some((unstarted.take().await?, pty))
    }

    /// Refuses a request; a channel that only collects refused requests is closed.
    fn refuse(&mut self, id: ChannelId, session: &mut Session) -> Result<(), anyhow::Error> {
        session.channel_failure(id)?;
        if let Some(pending) = self.channels.get_mut(&id)
            && !pending.started
        {
            pending.requests += 1;
            if pending.requests > MAX_PENDING_REQUESTS {
                self.channels.remove(&id);
                session.close(id)?;
            }
        }
        Ok(())
    }

    /// Runs `work` as tracked, counted work of this connection.
    fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        let busy = BusyGuard::new(self.busy.clone());
        self.shared.tracker.spawn(async move {
            work.await;
            drop(busy);
        });
    }

    fn console(&self, channel: ChannelId, session: &Session) -> Console {
        Console {
            shared: self.shared.clone(),
            actor: self.actor(),
            access: match self.role() {
                Some(Role::Viewer) => console::Access::ReadOnly,
                _ if self.restrictions.configs.is_some() => {
                    console::Access::Limited(self.restrictions.clone())
                }
                _ => console::Access::Full,
            },
            session: session.handle(),
            channel,
            interrupt: Interrupt::default(),
        }
    }

    fn actor(&self) -> Actor {
        self.login
            .as_ref()
            .map(|(_, actor)| actor.clone())
            .unwrap_or_default()
    }

    /// The one exec a service key may run: an agent's `report` (`common::report`), recorded
    /// for `status`. Any other line is refused, as before reports existed.
    async fn report(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), anyhow::Error> {
        let Some(mut parsed) = Report::parse_line(&String::from_utf8_lossy(data)) else {
            return self.refuse(channel, session);
        };
        if let Ok(r) = &parsed
            && !self.restrictions.may_see(&r.name)
        {
            parsed = Err(format!(
                "report: configuration {:?} is not among this key's configs=",
                r.name
            ));
        }
        let Some((ch, _)) = self.start(channel).await else {
            return self.refuse(channel, session);
        };
        session.channel_success(channel)?;
        let at = self.next_report.max(tokio::time::Instant::now());
        self.next_report = at + REPORT_PACE;
        let (store, actor) = (self.shared.store.clone(), self.actor());
        self.spawn(answer(ch, Interrupt::default(), false, async move {
            tokio::time::sleep_until(at).await;
            let (output, status) = match parsed {
                Err(why) => {
                    tracing::warn!(addr = %actor.remote_addr, key = %actor.key_fingerprint, "agent report refused: {why}");
                    (format!("{why}\n"), 1)
                }
                Ok(report) => {
                    let recorded = tokio::task::spawn_blocking(move || {
                        let done = store.record_status(&report, &actor);
                        if done.is_ok() {
                            tracing::debug!(host = %report.host, config = %report.name, hash = %report.hash, error = ?report.error, addr = %actor.remote_addr, "agent report");
                        }
                        done
                    })
                    .await;
                    match recorded {
                        Ok(Ok(())) => (String::new(), 0),
                        Ok(Err(e)) => {
                            tracing::error!("recording an agent report: {e:#}");
                            (format!("{e}\n"), 1)
                        }
                        Err(_) => ("internal error\n".to_string(), 1),
                    }
                }
            };
            (output.into_bytes(), status)
        }));
        Ok(())
    }
}

struct BusyGuard(Arc<AtomicUsize>);

impl BusyGuard {
    fn new(count: Arc<AtomicUsize>) -> BusyGuard {
        count.fetch_add(1, Ordering::SeqCst);
        BusyGuard(count)
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl russh::server::Handler for Connection {
    type Error = anyhow::Error;

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        self.shared.keys.reload_if_changed();
        let role = self.shared.keys.role_for(user, offer.public_key);
        if self.shared.keys.is_listed(role, offer.public_key) {
            Ok(Auth::Accept)
        } else {
            tracing::info!(
                %user,
                addr = %self.peer,
                key = %offer.public_key.fingerprint(HashAlg::Sha256),
                "login refused: key not authorized"
            );
            Ok(Auth::reject())
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let role = self.shared.keys.role_for(user, key.public_key);
        let fingerprint = key.public_key.fingerprint(HashAlg::Sha256).to_string();
        let now = common::timefmt::now();
        match self
            .shared
            .keys
            .check(role, key.public_key, Some(self.peer.ip()), now)
        {
            Ok((line, restrictions)) => {
                tracing::debug!(%user, addr = %self.peer, key = %fingerprint, ?role, line, ?restrictions, "login");
                // A service key's `command=` and `no-pty` change nothing: that role has no
                // console. Its `configs=` limits its SFTP view and reports.
                self.restrictions = restrictions;
                let actor = Actor {
                    user: user.to_string(),
                    key_fingerprint: fingerprint,
                    remote_addr: self.peer.to_string(),
                };
                self.login = Some((role, actor));
                if let Some(tx) = self.authed_tx.take() {
                    let _ = tx.send(());
                }
                Ok(Auth::Accept)
            }
            Err(refusal) => {
                tracing::info!(%user, addr = %self.peer, key = %fingerprint, "login refused: {refusal}");
                Ok(Auth::reject())
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.login.is_none() || self.channels.len() >= MAX_CHANNELS {
            // Dropping `reply` rejects the channel.
            return Ok(());
        }
        self.channels.insert(
            channel.id(),
            PendingChannel {
                channel: Some(Unstarted::watch(channel)),
                pty: None,
                started: false,
                requests: 0,
            },
        );
        reply.accept().await;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let allowed = self.role().is_some_and(Role::has_console) && !self.restrictions.no_pty;
        match self.channels.get_mut(&channel) {
            Some(pending) if allowed && !pending.started => {
                pending.pty = Some(Pty { cols: col_width });
                pending.requests += 1;
                session.channel_success(channel)?;
                Ok(())
            }
            _ => self.refuse(channel, session),
        }
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Accepted even after the console started (B12): the running shell gets the same
        // message through its channel and resizes.
        let console = self.role().is_some_and(Role::has_console);
        match self.channels.get_mut(&channel) {
            Some(pending) if console => {
                if let Some(pty) = &mut pending.pty {
                    pty.cols = col_width;
                }
                session.channel_success(channel)?;
                Ok(())
            }
            _ => self.refuse(channel, session),
        }
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if !self.role().is_some_and(Role::has_console) {
            return self.refuse(channel, session);
        }
        let Some((ch, pty)) = self.start(channel).await else {
            return self.refuse(channel, session);
        };
        session.channel_success(channel)?;
        let console = self.console(channel, session);
        match self.restrictions.command.clone() {
            // As sshd: a forced command runs instead of the shell.
            Some(forced) => self.spawn(run_exec(ch, console, forced, pty.is_some())),
            None => self.spawn(run_shell(ch, console, pty)),
        }
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.role() == Some(Role::Service) {
            return self.report(channel, data, session).await;
        }
        // The original refused an empty command (payload not longer than its length prefix).
        if !self.role().is_some_and(Role::has_console) || data.is_empty() {
            return self.refuse(channel, session);
        }
        let Some((ch, pty)) = self.start(channel).await else {
            return self.refuse(channel, session);
        };
        session.channel_success(channel)?;
        let asked = String::from_utf8_lossy(data).into_owned();
        let line = match &self.restrictions.command {
            Some(forced) => {
                tracing::info!(user = %self.actor().user, addr = %self.peer, asked = %asked, forced = %forced, "forced command (key option command=) runs instead");
                forced.clone()
            }
            None => asked,
        };
        let console = self.console(channel, session);
        self.spawn(run_exec(ch, console, line, pty.is_some()));
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(role) = self.role() else {
            return self.refuse(channel, session);
        };
        // Viewers do not upload, nor does a key limited to one command (`command=`).
        if name != "sftp"
            || role == Role::Viewer
            || (role == Role::Operator && self.restrictions.command.is_some())
        {
            return self.refuse(channel, session);
        }
        // One SFTP server per channel (B23).
        let Some((ch, _)) = self.start(channel).await else {
            return self.refuse(channel, session);
        };
        session.channel_success(channel)?;
        let store = self.shared.store.clone();
        let actor = self.actor();
        let stream = ch.into_stream();
        // As sshd: exit-status 0 and EOF once the SFTP session is over, before the channel
        // closes; scp in SFTP mode reports failure without them.
        let handle = session.handle();
        let before_close = async move {
            let _ = handle.exit_status_request(channel, 0).await;
            let _ = handle.eof(channel).await;
        };
        let cx = crate::sftp::Context::new(
            before_close,
            self.shared.idle_limit,
            self.stuck.clone(),
            Arc::clone(&self.shared.input_room),
        );
        match role {
            Role::Operator => {
                self.spawn(crate::sftp::operator::serve_then(stream, store, actor, cx))
            }
            Role::Service => self.spawn(crate::sftp::service::serve_then(
                stream,
                store,
                self.restrictions.clone(),
                cx,
            )),
            // Refused above.
            Role::Viewer => {}
        }
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse(channel, session)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single: bool,
        _protocol: &str,
        _cookie: &str,
        _screen: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse(channel, session)
    }

    async fn agent_request(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        // russh sends the failure reply for `false`.
        if let Some(pending) = self.channels.get_mut(&channel) {
            pending.requests += 1;
        }
        Ok(false)
    }
}

/// What a console task needs besides its channel.
struct Console {
    shared: Arc<Shared>,
    actor: Actor,
    access: console::Access,
    /// The session, to keep it from counting as idle while a command runs.
    session: russh::server::Handle,
    channel: ChannelId,
    interrupt: Interrupt,
}

/// What a terminal sends for Ctrl-C.
const CTRL_C: u8 = 0x03;

/// What stops a running command (`fsck`): its channel closing (the client went away), or
/// Ctrl-C typed on its pty. The original ran every command to its end.
#[derive(Clone, Default)]
struct Interrupt {
    /// Cancelled once the channel is gone, for good.
    closed: CancellationToken,
    /// Woken by each Ctrl-C: only a command running at the time stops.
    ctrl_c: Arc<Notify>,
}

impl Interrupt {
    /// Looks at one message of the channel: data with Ctrl-C on a pty wakes the command.
    fn saw(&self, msg: &ChannelMsg, pty: bool) {
        if let ChannelMsg::Data { data } = msg
            && pty
            && data.contains(&CTRL_C)
        {
            self.ctrl_c.notify_waiters();
        }
    }

    /// Resolves at the next interruption. Ctrl-C counts from this call on, not from the
    /// first poll.
    fn wait(&self) -> impl Future<Output = ()> + use<> {
        let closed = self.closed.clone();
        let mut typed = Box::pin(Arc::clone(&self.ctrl_c).notified_owned());
        typed.as_mut().enable();
        async move {
            tokio::select! {
                () = closed.cancelled() => {}
                () = typed => {}
            }
        }
    }
}

/// How often a running command tells russh the connection is not idle (at most; a third of
/// `-deadline` when that is shorter).
const BUSY_HEARTBEAT: Duration = Duration::from_secs(10);

/// Runs one console line off the async threads.
///
/// `-deadline` is an idle limit, and a command that runs longer than it (an `fsck` of a large
/// store) is not idle: russh restarts its inactivity timer on every message from our side, and
/// an empty data message puts nothing on the wire, so one is sent every [`BUSY_HEARTBEAT`].
async fn run_line(console: &Console, line: String) -> Outcome {
    let (store, actor, access) = (
        console.shared.store.clone(),
        console.actor.clone(),
        console.access.clone(),
    );
    let interrupted = console.interrupt.wait();
    tokio::pin!(interrupted);
    let stop = CancellationToken::new();
    let stopping = stop.clone();
    let work = tokio::task::spawn_blocking(move || {
        console::execute(&store, &actor, &line, &access, &stopping)
    });
    tokio::pin!(work);
    let beat = console.shared.idle_limit.map_or(BUSY_HEARTBEAT, |limit| {
        (limit / 3).clamp(Duration::from_millis(50), BUSY_HEARTBEAT)
    });
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + beat, beat);
    let result = loop {
        tokio::select! {
            result = &mut work => break result,
            () = &mut interrupted, if !stop.is_cancelled() => stop.cancel(),
            _ = heartbeat.tick() => {
                let _ = console.session.data(console.channel, bytes::Bytes::new()).await;
            }
        }
    };
    match result {
        Ok(outcome) => outcome,
        Err(err) => {
            tracing::error!(cause = %err, "console command panicked");
            Outcome {
                output: "internal error\n".to_string(),
                status: 1,
            }
        }
    }
}

/// Exec mode: run the command, send its output and exit status, EOF, close.
async fn run_exec(channel: Channel<Msg>, console: Console, line: String, pty: bool) {
    answer(channel, console.interrupt.clone(), pty, async {
        let outcome = run_line(&console, line).await;
        let bytes = if pty {
            shell::crlf(&outcome.output)
        } else {
            outcome.output.into_bytes()
        };
        (bytes, outcome.status)
    })
    .await;
}

/// Serves a started exec channel: `work`'s output and exit status, then the end. What the
/// client sends meanwhile is read and dropped (so that russh's queue never blocks the
/// session), but for `interrupt`'s signals.
async fn answer(
    channel: Channel<Msg>,
    interrupt: Interrupt,
    pty: bool,
    work: impl Future<Output = (Vec<u8>, u32)>,
) {
    let (mut reader, writer) = channel.split();
    let drain = tokio::spawn(async move {
        while let Some(msg) = reader.wait().await {
            interrupt.saw(&msg, pty);
        }
        interrupt.closed.cancel();
    });
    let (output, status) = work.await;
    let _ = finish(&writer, &output, status).await;
    drain.abort();
}

async fn finish(
    writer: &russh::ChannelWriteHalf<Msg>,
    output: &[u8],
    status: u32,
) -> Result<(), russh::Error> {
    if !output.is_empty() {
        writer.data(output).await?;
    }
    writer.exit_status(status).await?;
    writer.eof().await?;
    writer.close().await
}

/// Input waiting for the shell, past which the session ends (see [`read_input`]).
const MAX_QUEUED_INPUT: usize = 8 << 20;

/// Console input read but not yet consumed by the shell: at most [`MAX_QUEUED_INPUT`] for
/// this shell, and taken from the room for waiting input that all sessions share
/// ([`crate::server::input_room`]). Whatever is still taken when the last holder (the reader
/// task or the shell) goes is given back to the shared room.
struct WaitingInput {
    queued: AtomicUsize,
    shared: Arc<tokio::sync::Semaphore>,
    /// How long to wait for the shared room ([`crate::server::stall_limit`]).
    patience: Duration,
}

/// Why input was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoRoom {
    /// This shell has [`MAX_QUEUED_INPUT`] waiting.
    Own,
    /// The room all sessions share stayed taken by others for the whole stall limit.
    Shared,
}

impl WaitingInput {
    fn new(shared: Arc<tokio::sync::Semaphore>, patience: Duration) -> WaitingInput {
        WaitingInput {
            queued: AtomicUsize::new(0),
            shared,
            patience,
        }
    }

    /// Takes room for `n` more bytes. Waits while others hold the shared room (SFTP sessions
    /// do the same), but not forever: while this reader waits, russh's queue for the channel
    /// fills and the whole connection stops, its other sessions too, and those may be the
    /// ones holding the room. Only the reader task takes, so the own-limit check cannot race
    /// with another taker.
    async fn take(&self, n: usize) -> Result<(), NoRoom> {
        if self.queued.load(Ordering::Acquire) + n > MAX_QUEUED_INPUT {
            return Err(NoRoom::Own);
        }
        // `n` <= MAX_QUEUED_INPUT here, far below u32::MAX.
        let wait = self.shared.acquire_many(n as u32);
        let Ok(Ok(permits)) = tokio::time::timeout(self.patience, wait).await else {
            return Err(NoRoom::Shared);
        };
        // No await from here on: a reader cancelled meanwhile cannot lose the count.
        permits.forget();
        self.queued.fetch_add(n, Ordering::AcqRel);
        Ok(())
    }

    /// The shell consumed `n` bytes.
    fn give(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
        self.shared.add_permits(n);
    }
}

impl Drop for WaitingInput {
    fn drop(&mut self) {
        self.shared.add_permits(*self.queued.get_mut());
    }
}

/// What the shell gets from its channel.
enum Input {
    Data(bytes::Bytes),
    Width(u32),
    End,
    /// More input than there was room for.
    Overflow(NoRoom),
}

/// Reads the shell's channel on a task of its own, whatever the shell is doing. Left unread
/// while a command runs, russh's queue for the channel fills (piped input of a few MB does it)
/// and then blocks the whole session, including the sending of that command's output: the
/// console hung for good. Input waiting here is bounded (see [`WaitingInput`]); past this
/// shell's limit the shell is told once and the rest is discarded, still read so that the
/// session can send its last words.
fn read_input(
    mut reader: russh::ChannelReadHalf,
    waiting: Arc<WaitingInput>,
    interrupt: Interrupt,
    pty: bool,
) -> (
    tokio::sync::mpsc::UnboundedReceiver<Input>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut overflowed = false;
        while let Some(msg) = reader.wait().await {
            interrupt.saw(&msg, pty);
            let input = match msg {
                ChannelMsg::Data { .. } if overflowed => continue,
                ChannelMsg::Data { data } => match waiting.take(data.len()).await {
                    Ok(()) => Input::Data(data),
                    Err(why) => {
                        overflowed = true;
                        Input::Overflow(why)
                    }
                },
                ChannelMsg::WindowChange { col_width, .. } => Input::Width(col_width),
                ChannelMsg::Eof | ChannelMsg::Close => Input::End,
                _ => continue,
            };
            // The shell stopped listening; go on reading until the channel closes.
            let _ = tx.send(input);
        }
        interrupt.closed.cancel();
        let _ = tx.send(Input::End);
    });
    (rx, task)
}

/// Interactive console: line editor over a pty, or one command per LF-terminated line without.
async fn run_shell(channel: Channel<Msg>, console: Console, pty: Option<Pty>) {
    let (reader, writer) = channel.split();
    let waiting = Arc::new(WaitingInput::new(
        Arc::clone(&console.shared.input_room),
        crate::server::stall_limit(console.shared.idle_limit),
    ));
    let (mut input, reading) = read_input(
        reader,
        Arc::clone(&waiting),
        console.interrupt.clone(),
        pty.is_some(),
    );
    let status = shell_loop(&writer, &mut input, &waiting, &console, pty).await;
    let _ = writer.exit_status(status).await;
    let _ = writer.eof().await;
    let _ = writer.close().await;
    reading.abort();
}

async fn shell_loop(
    channel: &russh::ChannelWriteHalf<Msg>,
    input: &mut tokio::sync::mpsc::UnboundedReceiver<Input>,
    waiting: &WaitingInput,
    console: &Console,
    pty: Option<Pty>,
) -> u32 {
    let mut editor = pty.map(|p| Editor::new(p.cols));
    let mut splitter = LineSplitter::default();
    let mut out = Vec::new();
    if let Some(ed) = &mut editor {
        ed.prompt(&mut out);
        if channel.data(&out[..]).await.is_err() {
            return 1;
        }
    }
    loop {
        let next = tokio::select! {
            next = input.recv() => next.unwrap_or(Input::End),
            // Shutdown ends an idle console; a command that has started is not interrupted.
            () = console.shared.token.cancelled() => {
                let _ = channel.data(&b"\r\nserver shutting down\r\n"[..]).await;
                return 0;
            }
        };
        let step = match next {
            Input::Data(data) => {
                let step = match &mut editor {
                    Some(ed) => typed(channel, console, ed, &data, &mut out).await,
                    None => {
                        let mut step = Step::Continue;
                        for line in splitter.feed(&data, MAX_LINE) {
                            step = run_piped(channel, console, piped(line)).await;
                            if step != Step::Continue {
                                break;
                            }
                        }
                        step
                    }
                };
                waiting.give(data.len());
                step
            }
            Input::Width(cols) => {
                if let Some(ed) = &mut editor {
                    ed.set_width(cols);
                }
                Step::Continue
            }
            Input::End => match splitter.finish() {
                Some(last) if editor.is_none() => {
                    let _ = run_piped(channel, console, piped(last)).await;
                    Step::End(0)
                }
                _ => Step::End(0),
            },
            Input::Overflow(why) => {
                let text = match why {
                    NoRoom::Own => format!(
                        "more than {} MiB of input waiting: closing the console\n",
                        MAX_QUEUED_INPUT >> 20
                    ),
                    NoRoom::Shared => {
                        "the server has too much input waiting: closing the console\n".to_string()
                    }
                };
                tracing::warn!(
                    cause = ?why,
                    "console input over its room, session closed"
                );
                let text = if editor.is_some() {
                    shell::crlf(&text)
                } else {
                    text.into_bytes()
                };
                let _ = channel.data(&text[..]).await;
                Step::End(1)
            }
        };
        if let Step::End(status) = step {
            return status;
        }
    }
}

/// Whether the console goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Continue,
    End(u32),
}

/// Keystrokes from a pty: echo, and run each completed line before echoing what follows it.
async fn typed(
    channel: &russh::ChannelWriteHalf<Msg>,
    console: &Console,
    ed: &mut Editor,
    mut input: &[u8],
    out: &mut Vec<u8>,
) -> Step {
    while !input.is_empty() {
        out.clear();
        let (event, used) = ed.step(input, out);
        input = &input[used..];
        let mut end = None;
        match event {
            Some(Event::Line(line)) if !line.trim().is_empty() => {
                if channel.data(&out[..]).await.is_err() {
                    return Step::End(1);
                }
                out.clear();
                let outcome = run_line(console, line).await;
                out.extend_from_slice(&shell::crlf(&outcome.output));
                ed.prompt(out);
            }
            Some(Event::Line(_)) => ed.prompt(out),
            // Ctrl-D on an empty line.
            Some(Event::Eof) => end = Some(Step::End(0)),
            None => {}
        }
        if !out.is_empty() && channel.data(&out[..]).await.is_err() {
            return Step::End(1);
        }
        if let Some(end) = end {
            return end;
        }
    }
    Step::Continue
}

fn piped(p: Piped) -> Result<String, Outcome> {
    match p {
        Piped::Line(line) => Ok(line),
        Piped::TooLong => Err(Outcome {
            output: format!("command line too long: the limit is {MAX_LINE} bytes\n"),
            status: 1,
        }),
    }
}

/// One line of piped (non-pty) input: blank lines are skipped, output as in exec mode.
async fn run_piped(
    channel: &russh::ChannelWriteHalf<Msg>,
    console: &Console,
    line: Result<String, Outcome>,
) -> Step {
    let outcome = match line {
        Ok(line) if line.trim().is_empty() => return Step::Continue,
        Ok(line) => run_line(console, line).await,
        Err(refused) => refused,
    };
    if !outcome.output.is_empty() && channel.data(outcome.output.as_bytes()).await.is_err() {
        return Step::End(1);
    }
    Step::Continue
}

/// In-process checks of the channel request rules with a russh client: the parts OpenSSH's
/// `ssh` cannot drive (a second subsystem on one channel, window-change after exec).
#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use russh::keys::ssh_key::{Algorithm, PrivateKey};
    use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};

    use super::*;
    use crate::keys::Keyring;
    use crate::server::{self, Shared};
    use crate::store::{Options, Store};

    struct Client;

    impl russh::client::Handler for Client {
        type Error = russh::Error;
        async fn check_server_key(
            &mut self,
            _key: &PublicKeyOrCertificate,
        ) -> Result<bool, Self::Error> {
            Ok(true)
        }
    }

    struct Harness {
        addr: SocketAddr,
        shared: Arc<Shared>,
        op: Arc<PrivateKey>,
        srv: Arc<PrivateKey>,
        stop: Option<oneshot::Sender<()>>,
        server: tokio::task::JoinHandle<()>,
        _dir: tempfile::TempDir,
    }

    fn key_file(path: &Path, key: &PrivateKey) {
        std::fs::write(
            path,
            format!("# test\n{}\n", key.public_key().to_openssh().unwrap()),
        )
        .unwrap();
    }

    async fn start() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let op = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
        let srv = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
        key_file(&dir.path().join("op"), &op);
        key_file(&dir.path().join("srv"), &srv);
        let keys =
            Arc::new(Keyring::load(&dir.path().join("op"), &dir.path().join("srv"), None).unwrap());
        let store = Store::open(&dir.path().join("data"), Options::default()).unwrap();
        let host = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
        let shared = Arc::new(Shared {
            store,
            keys,
            token: tokio_util::sync::CancellationToken::new(),
            tracker: tokio_util::task::TaskTracker::new(),
            idle_limit: Some(Duration::from_secs(30)),
            input_room: server::input_room(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = Arc::new(server::ssh_config(host, Some(Duration::from_secs(30))));
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(server::run(
            listener,
            config,
            Arc::clone(&shared),
            8,
            Duration::from_secs(2),
            async {
                let _ = rx.await;
            },
        ));
        Harness {
            addr,
            shared,
            op: Arc::new(op),
            srv: Arc::new(srv),
            stop: Some(tx),
            server,
            _dir: dir,
        }
    }

    async fn login(
        h: &Harness,
        user: &str,
        key: &Arc<PrivateKey>,
    ) -> russh::client::Handle<Client> {
        let config = Arc::new(russh::client::Config::default());
        let mut session = russh::client::connect(config, h.addr, Client)
            .await
            .unwrap();
        let auth = session
            .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key.clone(), None))
            .await
            .unwrap();
        assert!(auth.success(), "login as {user}");
        session
    }

    /// The reply to the last request: true for success.
    async fn reply(channel: &mut Channel<russh::client::Msg>) -> bool {
        loop {
            match tokio::time::timeout(Duration::from_secs(5), channel.wait())
                .await
                .unwrap()
            {
                Some(ChannelMsg::Success) => return true,
                Some(ChannelMsg::Failure) => return false,
                Some(_) => continue,
                None => panic!("channel closed before the reply"),
            }
        }
    }

    /// Collects stdout, the exit status and refused requests until the channel closes.
    async fn output(channel: &mut Channel<russh::client::Msg>) -> (String, Option<u32>, usize) {
        let (mut out, mut status, mut refused) = (Vec::new(), None, 0);
        while let Some(msg) = tokio::time::timeout(Duration::from_secs(5), channel.wait())
            .await
            .unwrap()
        {
            match msg {
                ChannelMsg::Data { data } => out.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                ChannelMsg::Failure => refused += 1,
                _ => {}
            }
        }
        (String::from_utf8(out).unwrap(), status, refused)
    }

    #[tokio::test]
    async fn service_gets_one_sftp_per_channel_and_nothing_else() {
        let mut h = start().await;
        let session = login(&h, "deploy-agent", &h.srv.clone()).await;
        let mut ch = session.channel_open_session().await.unwrap();
        ch.exec(true, "components").await.unwrap();
        assert!(!reply(&mut ch).await, "exec refused");
        ch.request_pty(true, "xterm", 80, 24, 0, 0, &[])
            .await
            .unwrap();
        assert!(!reply(&mut ch).await, "pty refused");
        ch.request_subsystem(true, "sftp").await.unwrap();
        assert!(reply(&mut ch).await, "sftp accepted");
        // B23: a second sftp server on the same channel is refused. (The server sends nothing
        // on the SFTP stream until the client's INIT, so the next message is the reply.)
        ch.request_subsystem(true, "sftp").await.unwrap();
        assert!(!reply(&mut ch).await, "second sftp on one channel refused");
        // When the client ends the SFTP session, the server reports exit-status 0 as sshd does
        // (scp in SFTP mode fails without it).
        ch.eof().await.unwrap();
        assert_eq!(output(&mut ch).await.1, Some(0));
        drop(h.stop.take());
    }

    #[tokio::test]
    async fn operator_exec_then_only_window_change() {
        let mut h = start().await;
        let session = login(&h, "alice", &h.op.clone()).await;
        let mut ch = session.channel_open_session().await.unwrap();
        ch.set_env(true, "LANG", "C").await.unwrap();
        assert!(!reply(&mut ch).await, "env refused");
        ch.exec(true, "help").await.unwrap();
        assert!(reply(&mut ch).await, "exec accepted");
        // After exec: window-change is still accepted (B12), a second exec is refused.
        ch.window_change(100, 40, 0, 0).await.unwrap();
        ch.exec(true, "components").await.unwrap();
        let (out, status, refused) = output(&mut ch).await;
        assert!(out.starts_with("addver "), "{out}");
        assert_eq!((status, refused), (Some(0), 1));
        // A bad command: message on stdout, status 1.
        let mut ch = session.channel_open_session().await.unwrap();
        ch.exec(true, "showconf").await.unwrap();
        assert!(reply(&mut ch).await);
        assert_eq!(
            output(&mut ch).await,
            ("name should be set\n".to_string(), Some(1), 0)
        );
        drop(h.stop.take());
    }

    #[tokio::test]
    async fn shell_with_and_without_pty() {
        let mut h = start().await;
        let session = login(&h, "alice", &h.op.clone()).await;
        let mut ch = session.channel_open_session().await.unwrap();
        ch.request_pty(true, "xterm", 80, 24, 0, 0, &[])
            .await
            .unwrap();
        assert!(reply(&mut ch).await);
        ch.request_shell(true).await.unwrap();
        assert!(reply(&mut ch).await);
        // A second channel must not make the running shell lose its window-change rights.
        let _other = session.channel_open_session().await.unwrap();
        ch.window_change(100, 40, 0, 0).await.unwrap();
        ch.data(&b"showconf\r\x04"[..]).await.unwrap();
        let (out, status, _) = output(&mut ch).await;
        let prompt = "\x1b[31m> \x1b[0m";
        assert_eq!(
            out,
            format!("{prompt}showconf\r\nname should be set\r\n{prompt}\r\n")
        );
        assert_eq!(status, Some(0));
        // Without a pty: no prompt, no echo, LF-terminated lines, blank lines skipped.
        let mut ch = session.channel_open_session().await.unwrap();
        ch.request_shell(true).await.unwrap();
        assert!(reply(&mut ch).await);
        ch.data(&b"showconf\n\ncomponents\nshowconf -name x"[..])
            .await
            .unwrap();
        ch.eof().await.unwrap();
        let (out, status, _) = output(&mut ch).await;
        assert_eq!(out, "name should be set\nconfiguration \"x\" not found\n");
        assert_eq!(status, Some(0));
        drop(h.stop.take());
    }

    /// Console input waiting for the shell takes from the room all sessions share: it waits
    /// while others hold that room (rather than closing the console), and gives it back.
    #[tokio::test]
    async fn console_input_waits_for_the_shared_room() {
        let mut h = start().await;
        let room = Arc::clone(&h.shared.input_room);
        let session = login(&h, "alice", &h.op.clone()).await;
        let mut ch = session.channel_open_session().await.unwrap();
        ch.request_shell(true).await.unwrap();
        assert!(reply(&mut ch).await);
        let all = u32::try_from(server::TOTAL_INPUT_CAP).unwrap();
        let held = Arc::clone(&room).acquire_many_owned(all).await.unwrap();
        ch.data(&b"showconf\n"[..]).await.unwrap();
        let early = tokio::time::timeout(Duration::from_millis(300), ch.wait()).await;
        assert!(early.is_err(), "served without room: {early:?}");
        drop(held);
        ch.eof().await.unwrap();
        let (out, status, _) = output(&mut ch).await;
        assert_eq!((out.as_str(), status), ("name should be set\n", Some(0)));
        // Everything is given back once the console is over.
        let whole = std::time::Instant::now();
        while room.available_permits() != server::TOTAL_INPUT_CAP {
            assert!(
                whole.elapsed() < Duration::from_secs(10),
                "room not given back"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(h.stop.take());
    }

    #[tokio::test]
    async fn waiting_input_is_counted_and_given_back() {
        let shared = Arc::new(tokio::sync::Semaphore::new(100));
        let waiting = WaitingInput::new(Arc::clone(&shared), Duration::from_millis(100));
        assert_eq!(waiting.take(60).await, Ok(()));
        assert_eq!(shared.available_permits(), 40);
        // Not enough shared room: it waits for the stall limit, then gives up, taking nothing.
        assert_eq!(waiting.take(60).await, Err(NoRoom::Shared));
        assert_eq!(shared.available_permits(), 40);
        waiting.give(50);
        assert_eq!(waiting.take(80).await, Ok(()));
        assert_eq!(shared.available_permits(), 10);
        // Past this shell's own limit: refused at once, whatever the shared room.
        assert_eq!(waiting.take(MAX_QUEUED_INPUT).await, Err(NoRoom::Own));
        // What is still taken goes back when the last holder goes.
        drop(waiting);
        assert_eq!(shared.available_permits(), 100);
    }

    #[tokio::test]
    async fn shutdown_ends_idle_consoles_and_new_connections() {
        let mut h = start().await;
        let session = login(&h, "alice", &h.op.clone()).await;
        let mut ch = session.channel_open_session().await.unwrap();
        ch.request_pty(true, "xterm", 80, 24, 0, 0, &[])
            .await
            .unwrap();
        assert!(reply(&mut ch).await);
        ch.request_shell(true).await.unwrap();
        assert!(reply(&mut ch).await);
        drop(h.stop.take());
        let (out, status, _) = output(&mut ch).await;
        assert!(out.ends_with("server shutting down\r\n"), "{out:?}");
        assert_eq!(status, Some(0));
        tokio::time::timeout(Duration::from_secs(5), &mut h.server)
            .await
            .expect("run returns once the sessions are done")
            .unwrap();
        assert!(
            tokio::net::TcpStream::connect(h.addr).await.is_err(),
            "listener closed"
        );
    }

    /// Data on a channel before the request that starts it: russh queues it for the channel,
    /// and with nobody reading, a full queue blocked the whole session for good (not even
    /// `-deadline` fired), holding a `-maxconn` slot. Any key could do it, a service key too.
    #[tokio::test]
    async fn data_before_the_request_is_dropped() {
        let mut h = start().await;
        let session = login(&h, "deploy-agent", &h.srv.clone()).await;
        let mut flooded = session.channel_open_session().await.unwrap();
        // Far more messages than russh queues per channel, far less than the window.
        for _ in 0..1000 {
            flooded.data(&[0xffu8; 512][..]).await.unwrap();
        }
        // The channel starts: its SFTP server never sees the data sent before the request
        // (it would take 0xffffffff for a packet length and end the session at once).
        flooded.request_subsystem(true, "sftp").await.unwrap();
        // The session still serves a second channel...
        let mut other =
            tokio::time::timeout(Duration::from_secs(10), session.channel_open_session())
                .await
                .expect("the session is blocked")
                .unwrap();
        other.request_subsystem(true, "sftp").await.unwrap();
        assert!(reply(&mut other).await, "sftp accepted");
        // ...and the flooded one.
        assert!(reply(&mut flooded).await, "sftp accepted");
        flooded
            .data(&[0, 0, 0, 5, 1, 0, 0, 0, 3][..])
            .await
            .unwrap();
        let version = tokio::time::timeout(Duration::from_secs(5), flooded.wait())
            .await
            .expect("no VERSION");
        assert!(
            matches!(&version, Some(ChannelMsg::Data { data }) if data.get(4) == Some(&2)),
            "{version:?}"
        );
        flooded.eof().await.unwrap();
        assert_eq!(output(&mut flooded).await.1, Some(0));
        drop(h.stop.take());
    }

    #[tokio::test]
    async fn wrong_role_key_is_refused() {
        let h = start().await;
        let config = Arc::new(russh::client::Config::default());
        let mut session = russh::client::connect(config, h.addr, Client)
            .await
            .unwrap();
        let auth = session
            .authenticate_publickey(
                "deploy-agent",
                PrivateKeyWithHashAlg::new(h.op.clone(), None),
            )
            .await
            .unwrap();
        assert!(!auth.success());
    }
}
