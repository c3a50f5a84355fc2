/** True under CI (the CI variable set to anything but '', '0' or 'false'): tools the tests need must then be present. */
export function isCi(): boolean {
  const ci = process.env.CI;
  return ci !== undefined && ci !== '' && ci !== '0' && ci.toLowerCase() !== 'false';
}
