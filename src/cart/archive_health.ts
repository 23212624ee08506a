/**
 * What one process knows of the archive's health, shared by its worker loops. It tells an outage
 * (the archive is down: every file must wait) from a file that fails (the archive answers others),
 * and during an outage lets one request at a time probe the archive at backoff intervals, instead
 * of every waiting file knocking on an archive that is down.
 */
import { log } from "../log.ts";
import { backoffDelay } from "./backoff.ts";

/** The archive request a step makes. */
export type ArchiveStep = "stage" | "status" | "pull";

interface Outage {
  since: number;
  reason: string;
  probes: number;
  nextProbeAt: number;
  probing: boolean;
}

/** Files failing in a row, with no answer between, that make an outage. */
const outageFiles = 3;

/** One process's view of the archive: recent answers by kind of request, and any outage. */
export class ArchiveHealth {
  private readonly lastAnswered: Record<ArchiveStep, number> = { stage: 0, status: 0, pull: 0 };
  /** The files whose request of each kind failed since the archive last answered anything. */
  private readonly failingSinceAnswer: Record<ArchiveStep, Set<number>> = {
    stage: new Set(),
    status: new Set(),
    pull: new Set(),
  };
  private outage?: Outage;

  constructor(
    private readonly name: string,
    private readonly firstDelayMs: number,
    private readonly maxDelayMs: number,
  ) {}

  /** The archive answered a request of this kind as asked: any outage is over. */
  answered(step: ArchiveStep, now: number): void {
    this.lastAnswered[step] = now;
    this.reachable(now);
  }

  /** The archive answered, if only to refuse this file: it is up. */
  reachable(now: number): void {
    // Failures in a row are counted only while nothing at all is answered.
    for (const failing of Object.values(this.failingSinceAnswer)) failing.clear();
    if (!this.outage) return;
    const seconds = Math.round((now - this.outage.since) / 1000);
    log.info(`archive ${this.name} answers again, after ${seconds} s`);
    this.outage = undefined;
  }

  /**
   * Judges a failure that could be the archive's or this file's alone (a 5xx, a cut body): the
   * file's, if the archive answered a request of this kind since `recently`, and no more than two
   * other files' requests of this kind have failed since it last answered anything; else the
   * archive's. (An archive that goes down right after answering fails every file at once:
   * counting the files tells that from one bad file before the retries run out.)
   */
  judge(step: ArchiveStep, fileId: number, recently: number): "file" | "outage" {
    const failing = this.failingSinceAnswer[step];
    failing.add(fileId);
    if (failing.size >= outageFiles) return "outage";
    return this.lastAnswered[step] >= recently ? "file" : "outage";
  }

  /**
   * The archive is not answering: keep away from it for a while, longer each time. Returns when
   * the outage began, as this process saw it.
   */
  unavailable(now: number, reason: string): number {
    if (!this.outage) {
      log.warn(`archive ${this.name} is unavailable (${reason}); files wait for it`);
      this.outage = { since: now, reason, probes: 0, nextProbeAt: now, probing: false };
    }
    const outage = this.outage;
    outage.reason = reason;
    // Requests sent before the outage was noticed fail too; only a failed probe backs off more.
    if (now >= outage.nextProbeAt || outage.probing) {
      outage.probes++;
      outage.probing = false;
      outage.nextProbeAt = now + backoffDelay(this.firstDelayMs, outage.probes, this.maxDelayMs);
    }
    return outage.since;
  }

  /** When the archive may next be asked (now, unless it is in an outage). */
  nextContactAt(now: number): number {
    return this.outage ? Math.max(this.outage.nextProbeAt, now) : now;
  }

  /**
   * Whether a worker loop may ask the archive something now. In an outage, one caller at a time
   * is let through (the probe) once the backoff delay has passed; the others wait for its answer.
   */
  permit(now: number): { wait: number; probe: boolean } {
    const outage = this.outage;
    if (!outage) return { wait: 0, probe: false };
    if (outage.probing) return { wait: this.firstDelayMs, probe: false };
    if (now < outage.nextProbeAt) return { wait: outage.nextProbeAt - now, probe: false };
    outage.probing = true;
    return { wait: 0, probe: true };
  }

  /** The probe's step ended; if it learnt nothing of the archive, another caller may probe. */
  probeEnded(): void {
    if (this.outage) this.outage.probing = false;
  }
}
