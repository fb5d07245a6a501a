/**
 * Under CI (CI=true) every server, tool and shared file the suite uses must be there: a test that would
 * skip for want of one fails instead, naming what is missing. Outside CI the friendly skip stays.
 */
export const IN_CI = /^(1|true|yes)$/i.test(process.env.CI?.trim() ?? "");

/** The reason to skip, or (under CI) an error naming what is missing. */
export function unlessCI(reason: string): string {
  if (IN_CI) throw new Error(`CI=true and this test needs what is missing: ${reason}`);
  return reason;
}

/** For a test's or suite's `skip` option: false when nothing is missing, else as unlessCI. */
export function skipUnlessCI(reason: string | false | null | undefined): string | false {
  return reason ? unlessCI(reason) : false;
}
