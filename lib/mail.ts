import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import nodemailer from 'nodemailer';

/**
 * How the edge sends email (sign-in links). One interface; the transport is configuration:
 * - `smtp`: nodemailer to MARKCO_SMTP_URL (`smtps://user:pass@host:465`), from MARKCO_MAIL_FROM;
 * - `file`: each message written as a file under a directory (development: open the link from there;
 *   never the log, which must not hold sign-in tokens);
 * - tests pass their own (`MemoryMailTransport`).
 */
export interface MailMessage {
  to: string;
  subject: string;
  text: string;
}

export interface MailTransport {
  send(message: MailMessage): Promise<void>;
}

export function smtpMailTransport(url: string, from: string): MailTransport {
  const transporter = nodemailer.createTransport(url);
  return {
    async send(m) {
      await transporter.sendMail({ from, to: m.to, subject: m.subject, text: m.text });
    },
  };
}

export function fileMailTransport(dir: string): MailTransport {
  return {
    async send(m) {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      const name = `${new Date().toISOString().replace(/[:.]/g, '-')}-${m.to.replace(/[^a-zA-Z0-9@._-]/g, '_')}.txt`;
      writeFileSync(join(dir, name), `To: ${m.to}\nSubject: ${m.subject}\n\n${m.text}\n`, { mode: 0o600 });
    },
  };
}

/** Keeps what was sent, for tests. */
export class MemoryMailTransport implements MailTransport {
  readonly sent: MailMessage[] = [];
  async send(m: MailMessage): Promise<void> {
    this.sent.push(m);
  }
}
