//! SMTP via lettre, as Dewy's gopkg.in/mail.v2 dialer: port 465 speaks TLS from the start,
//! other ports upgrade with STARTTLS; TLS 1.2 or later, the certificate checked against the
//! host name and the system roots. Credentials are always sent (Dewy requires them).
//!
//! One rule is stricter than Dewy's: to any host but this machine STARTTLS is required, so a
//! password never crosses the network in clear (Dewy's library refuses plain AUTH there too,
//! but sends unauthenticated mail in clear to a server that offers no AUTH).

use std::time::Duration;

use common::dewy::notify::HookResult;
use common::dewy::notify::mail::{
    self as texts, IMPLICIT_TLS_PORT, MailConfig, Origin, plaintext_auth_allowed,
};
use lettre::message::header::{ContentType, To};
use lettre::message::{Mailbox, Mailboxes};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters, TlsVersion};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// Each SMTP command's timeout...
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// ...and one whole mail's (connect, TLS, AUTH, data).
const TOTAL: Duration = Duration::from_secs(30);

pub(super) struct Mail {
    subject: String,
    from: Mailbox,
    to: Mailboxes,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    origin: Origin,
}

impl Mail {
    pub(super) fn new(cfg: MailConfig, origin: Origin) -> Result<Mail, String> {
        let from: Mailbox = cfg
            .from
            .parse()
            .map_err(|e| format!("from address {}: {e}", common::gostr::quote(&cfg.from)))?;
        let to: Mailboxes = cfg
            .to
            .parse()
            .map_err(|e| format!("to address {}: {e}", common::gostr::quote(&cfg.to)))?;
        let params = TlsParameters::builder(cfg.host.clone())
            .set_min_tls_version(TlsVersion::Tlsv12)
            .build_rustls()
            .map_err(|e| format!("TLS: {e}"))?;
        let tls = if cfg.port == IMPLICIT_TLS_PORT {
            Tls::Wrapper(params)
        } else if plaintext_auth_allowed(&cfg.host) {
            Tls::Opportunistic(params)
        } else {
            Tls::Required(params)
        };
        let hello = if origin.hostname.is_empty() {
            ClientId::default()
        } else {
            ClientId::Domain(origin.hostname.clone())
        };
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(cfg.host.as_str())
            .port(cfg.port)
            .tls(tls)
            .credentials(Credentials::new(cfg.username, cfg.password))
            .timeout(Some(COMMAND_TIMEOUT))
            .hello_name(hello)
            .build();
        Ok(Mail {
            subject: cfg.subject,
            from,
            to,
            transport,
            origin,
        })
    }

    pub(super) async fn send(&self, msg: &str) -> Result<(), String> {
        let body = texts::message_body(msg, &self.origin);
        self.deliver(&self.subject, body).await
    }

    pub(super) async fn send_hook_result(&self, r: &HookResult) -> Result<(), String> {
        let (subject, body) = texts::hook_mail(r, &self.origin);
        self.deliver(&subject, body).await
    }

    async fn deliver(&self, subject: &str, body: String) -> Result<(), String> {
        let message = Message::builder()
            .from(self.from.clone())
            .mailbox(To::from(self.to.clone()))
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| format!("mail: {e}"))?;
        match tokio::time::timeout(TOTAL, self.transport.send(message)).await {
            Ok(Ok(_)) => Ok(()),
            // lettre's errors name the server's reply, never the credentials.
            Ok(Err(e)) => Err(format!("mail: {e}")),
            Err(_) => Err(format!("mail: not sent within {}s", TOTAL.as_secs())),
        }
    }
}
