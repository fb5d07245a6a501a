/**
 * Where a source may point: stream hosts (MASKWATCH_SOURCE_ALLOW) and the folder file sources live in
 * (MASKWATCH_SOURCE_FILE_ROOT). Link-local and cloud-metadata addresses are refused unless allowed by
 * name, so a source cannot be used to read a metadata service from inside the network.
 */
import { lookup as dnsLookup } from "node:dns/promises";
import { realpath } from "node:fs/promises";
import { BlockList, isIP } from "node:net";
import { isAbsolute, relative, sep } from "node:path";

/** A source pointing where the policy does not allow (answered 400, like other invalid sources). */
export class SourcePolicyError extends Error {
  readonly code = "invalid_source";
  constructor(message: string) {
    super(message);
    this.name = "SourcePolicyError";
  }
}

export interface SourcePolicy {
  /** Host names, `*.suffix` wildcards, addresses or CIDRs stream sources may use; empty: any not refused. */
  allow: readonly string[];
  /** File sources must resolve (symlinks followed) inside this folder. */
  fileRoot?: string;
}

export type Lookup = (host: string) => Promise<{ address: string; family: number }[]>;

const defaultLookup: Lookup = (host) => dnsLookup(host, { all: true, verbatim: true });

const METADATA_NAMES = new Set(["metadata", "metadata.google.internal", "metadata.goog", "instance-data"]);

/** Link-local (where cloud metadata services answer), "this host" and unspecified addresses. */
const REFUSED = new BlockList();
REFUSED.addSubnet("169.254.0.0", 16, "ipv4");
REFUSED.addSubnet("0.0.0.0", 8, "ipv4");
REFUSED.addSubnet("fe80::", 10, "ipv6");
REFUSED.addAddress("::", "ipv6");
REFUSED.addAddress("fd00:ec2::254", "ipv6");

/** Parses MASKWATCH_SOURCE_ALLOW: comma-separated, case-insensitive. */
export function parseAllowList(raw: string | undefined): string[] {
  return (raw ?? "")
    .split(",")
    .map((s) => s.trim().toLowerCase())
    .filter(Boolean);
}

function family(address: string): "ipv4" | "ipv6" {
  return isIP(address) === 6 ? "ipv6" : "ipv4";
}

function matchesEntry(entry: string, host: string, addresses: readonly string[]): boolean {
  if (entry.startsWith("*.")) return host.endsWith(entry.slice(1));
  const [base, bits] = entry.split("/");
  if (isIP(base)) {
    const list = new BlockList();
    if (bits !== undefined) list.addSubnet(base, Number(bits), family(base));
    else list.addAddress(base, family(base));
    return addresses.some((a) => list.check(a, family(a)));
  }
  return host === entry;
}

/** Throws StreamError invalid_source when `url` of a `kind` source is outside the policy. */
export async function checkSourceTarget(
  kind: string,
  url: string | null,
  policy: SourcePolicy,
  lookup: Lookup = defaultLookup,
): Promise<void> {
  const refuse = (msg: string) => new SourcePolicyError(msg);
  if (!url) return;
  if (kind === "file" && policy.fileRoot) {
    const root = await realpath(policy.fileRoot).catch(() => policy.fileRoot as string);
    const real = await realpath(url).catch(() => null);
    const rel = real === null ? null : relative(root, real);
    if (rel === null || rel === ".." || rel.startsWith(`..${sep}`) || isAbsolute(rel))
      throw refuse(`file sources must be inside ${policy.fileRoot} (MASKWATCH_SOURCE_FILE_ROOT)`);
    return;
  }
  if (kind !== "stream") return;
  await checkUrlHost(url, policy.allow, { noun: "stream", setting: "MASKWATCH_SOURCE_ALLOW" }, lookup);
}

/**
 * Throws SourcePolicyError when `url`'s host is not in `allow` (when that is set), or is a link-local or
 * metadata address not allowed by name. `noun` and `setting` name what is checked in the message.
 */
export async function checkUrlHost(
  url: string,
  allow: readonly string[],
  what: { noun: string; setting: string },
  lookup: Lookup = defaultLookup,
): Promise<void> {
  const refuse = (msg: string) => new SourcePolicyError(msg);
  let host: string;
  try {
    host = new URL(url).hostname.toLowerCase().replace(/^\[|\]$/g, "");
  } catch {
    throw refuse(`the ${what.noun} url is not a URL`);
  }
  if (!host) throw refuse(`the ${what.noun} url names no host`);
  let addresses: string[];
  if (isIP(host)) addresses = [host];
  else {
    try {
      addresses = (await lookup(host)).map((a) => a.address);
    } catch {
      addresses = [];
    }
  }
  const allowed = allow.some((e) => matchesEntry(e, host, addresses));
  if (allow.length && !allowed)
    throw refuse(`the ${what.noun} host ${host} is not in ${what.setting} (${allow.join(", ")})`);
  if (allowed) return;
  if (METADATA_NAMES.has(host) || addresses.some((a) => REFUSED.check(a, family(a))))
    throw refuse(
      `the ${what.noun} host ${host} is a link-local or metadata address; allow it by name in ${what.setting} if it is meant`,
    );
  // A name that does not resolve here yet (a camera not yet on the network) is let through: there
  // is no address to judge, and the connection will say why it fails.
}
