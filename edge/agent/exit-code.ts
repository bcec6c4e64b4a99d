/**
 * Exit code that asks systemd for a restart onto the new `current` (RestartForceExitStatus= in the unit):
 * EX_TEMPFAIL. Its own module so the CLI can name it without loading the agent code.
 */
export const RESTART_EXIT_CODE = 75;
