// The object stores of the Chinese clouds, as Dify's STORAGE_TYPE names them, reached through the
// S3-compatible API each vendor documents on its buckets (with the AWS SDK we already use), from
// Dify's own variables only. Dify talks to them with the vendors' Python SDKs; we derive the S3
// endpoint of the same bucket from the endpoint (or region) Dify's SDK is given:
//   aliyun-oss     oss-<region>[-internal].aliyuncs.com  → s3.oss-<region>[-internal].aliyuncs.com
//   tencent-cos    TENCENT_COS_REGION                     → cos.<region>.myqcloud.com
//                  (TENCENT_COS_CUSTOM_DOMAIN: that domain, the bucket implied by it)
//   huawei-obs     obs.<region>.myhuaweicloud.com         → the same (OBS answers S3 there)
//   volcengine-tos tos-<region>.volces.com                → tos-s3-<region>.volces.com
//   baidu-obs      <region>.bcebos.com                    → s3.<region>.bcebos.com
// Buckets are addressed virtual-host style (bucket.endpoint), as TOS and OSS require, except an
// endpoint given as an IP address or localhost, which is addressed path-style (as OSS's own SDK
// does): how a test server, or a private gateway, stands in for the store.
import { ConfigError } from '../common/errors.js';
import type { DifySettings, ResolvedStorage } from './dify-settings.js';

export const VENDOR_S3_TYPES = ['aliyun-oss', 'tencent-cos', 'huawei-obs', 'volcengine-tos', 'baidu-obs'] as const;
export type VendorS3Type = (typeof VENDOR_S3_TYPES)[number];

/** Every variable of these stores we read (Dify's names). */
export const VENDOR_S3_NAMES = [
  'ALIYUN_OSS_BUCKET_NAME',
  'ALIYUN_OSS_ACCESS_KEY',
  'ALIYUN_OSS_SECRET_KEY',
  'ALIYUN_OSS_ENDPOINT',
  'ALIYUN_OSS_REGION',
  'ALIYUN_OSS_AUTH_VERSION',
  'ALIYUN_OSS_PATH',
  'ALIYUN_CLOUDBOX_ID',
  'TENCENT_COS_BUCKET_NAME',
  'TENCENT_COS_REGION',
  'TENCENT_COS_SECRET_ID',
  'TENCENT_COS_SECRET_KEY',
  'TENCENT_COS_SCHEME',
  'TENCENT_COS_CUSTOM_DOMAIN',
  'HUAWEI_OBS_BUCKET_NAME',
  'HUAWEI_OBS_ACCESS_KEY',
  'HUAWEI_OBS_SECRET_KEY',
  'HUAWEI_OBS_SERVER',
  'HUAWEI_OBS_PATH_STYLE',
  'HUAWEI_OBS_USE_OIDC',
  'VOLCENGINE_TOS_BUCKET_NAME',
  'VOLCENGINE_TOS_ACCESS_KEY',
  'VOLCENGINE_TOS_SECRET_KEY',
  'VOLCENGINE_TOS_ENDPOINT',
  'VOLCENGINE_TOS_REGION',
  'BAIDU_OBS_BUCKET_NAME',
  'BAIDU_OBS_ACCESS_KEY',
  'BAIDU_OBS_SECRET_KEY',
  'BAIDU_OBS_ENDPOINT',
];

const bad = (line: string) => new ConfigError(`invalid configuration:\n  ${line}`);

/** A host that is an IP address or localhost: addressed path-style. */
export function isLocalHost(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || /^\d{1,3}(\.\d{1,3}){3}$/.test(h) || h.includes(':');
}

// pydantic's bool, as Dify reads HUAWEI_OBS_PATH_STYLE.
const TRUE_WORDS = new Set(['1', 'on', 't', 'true', 'y', 'yes']);
const FALSE_WORDS = new Set(['', '0', 'off', 'f', 'false', 'n', 'no']);

export function vendorS3Storage(type: VendorS3Type, s: DifySettings): ResolvedStorage {
  const need = (name: string): string => {
    const v = s.get(name);
    if (!v) throw bad(`${s.label(name)}: required for STORAGE_TYPE=${type}${s.where('STORAGE_TYPE')}`);
    return v;
  };
  const bool = (name: string): boolean => {
    const v = (s.get(name) ?? '').trim().toLowerCase();
    if (TRUE_WORDS.has(v)) return true;
    if (FALSE_WORDS.has(v)) return false;
    throw bad(`${s.label(name)}: "${s.get(name)}" is not true or false`);
  };
  /** An endpoint as the vendor's SDK reads it: a URL, or a host whose scheme is the SDK's default. */
  const endpointOf = (name: string, defaultScheme: 'http' | 'https'): URL => {
    const v = need(name).trim();
    let url: URL;
    try {
      url = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(v) ? v : `${defaultScheme}://${v}`);
    } catch {
      throw bad(`${s.label(name)}: "${v}" is not a host or an http(s) address`);
    }
    if (!/^https?:$/.test(url.protocol) || url.username || url.password || url.search || (url.pathname !== '/' && url.pathname !== ''))
      throw bad(`${s.label(name)}: "${v}" is not a host or an http(s) address without path, query or credentials`);
    return url;
  };
  const at = (url: URL, host: string) => `${url.protocol}//${host}${url.port ? `:${url.port}` : ''}`;
  const keys = (id: string, secret: string) => ({
    accessKeyId: need(id),
    secretAccessKey: need(secret),
    credentialNames: `${id} and ${secret}`,
    checksumsWhenRequired: true,
  });
  const derived = (name: string, from: string, to: string) =>
    `key storage: ${to} (the S3-compatible endpoint of ${name}=${from}${s.where(name)})`;

  switch (type) {
    case 'aliyun-oss': {
      const bucket = need('ALIYUN_OSS_BUCKET_NAME');
      const url = endpointOf('ALIYUN_OSS_ENDPOINT', 'http'); // oss2 adds http:// to a bare host
      const auth = (s.get('ALIYUN_OSS_AUTH_VERSION') ?? '').trim();
      if (s.get('ALIYUN_CLOUDBOX_ID') && auth === 'v4')
        throw bad(
          `${s.label('ALIYUN_CLOUDBOX_ID')}: an OSS on CloudBox bucket (signed for oss-cloudbox) is not supported: ` +
            `dify-provision writes through OSS's S3-compatible API of a region's buckets`,
        );
      // Dify: posixpath.join(ALIYUN_OSS_PATH, key) when the path is set.
      const folder = s.get('ALIYUN_OSS_PATH') ?? '';
      if (folder.startsWith('/'))
        throw bad(`${s.label('ALIYUN_OSS_PATH')}: "${folder}" starts with "/", which no OSS object name may (Dify's writes fail too)`);
      const prefix = folder === '' || folder.endsWith('/') ? folder : `${folder}/`; // posixpath.join keeps the rest as it is
      const base = { service: 'Aliyun OSS', bucket, prefix, ...keys('ALIYUN_OSS_ACCESS_KEY', 'ALIYUN_OSS_SECRET_KEY') };
      if (isLocalHost(url.hostname))
        return {
          settings: { kind: 's3', ...base, endpoint: at(url, url.hostname), region: s.get('ALIYUN_OSS_REGION'), forcePathStyle: true },
        };
      const m = /^(?:s3\.)?oss-([a-z0-9-]+)\.aliyuncs\.com$/.exec(url.hostname);
      if (!m)
        throw bad(
          `${s.label('ALIYUN_OSS_ENDPOINT')}: "${url.host}" is not an OSS region endpoint (oss-<region>[-internal].aliyuncs.com), ` +
            `from which dify-provision derives the bucket's S3-compatible endpoint (s3.oss-<region>.aliyuncs.com)`,
        );
      const accelerate = m[1]!.startsWith('accelerate');
      const region = accelerate ? (s.get('ALIYUN_OSS_REGION') ?? '').replace(/^oss-/, '') : m[1]!.replace(/-internal$/, '');
      if (!region) throw bad(`${s.label('ALIYUN_OSS_REGION')}: required with the acceleration endpoint ${url.host}`);
      const endpoint = at(url, `s3.oss-${m[1]}.aliyuncs.com`);
      return {
        settings: { kind: 's3', ...base, endpoint, region, forcePathStyle: false },
        note: derived('ALIYUN_OSS_ENDPOINT', url.host, endpoint),
      };
    }
    case 'tencent-cos': {
      const bucket = need('TENCENT_COS_BUCKET_NAME');
      const scheme = s.get('TENCENT_COS_SCHEME') || 'https'; // CosConfig's default
      if (scheme !== 'http' && scheme !== 'https')
        throw bad(`${s.label('TENCENT_COS_SCHEME')}: "${scheme}" is not http or https (Dify's COS client refuses it too)`);
      const base = { service: 'Tencent COS', bucket, prefix: '', ...keys('TENCENT_COS_SECRET_ID', 'TENCENT_COS_SECRET_KEY') };
      const domain = (s.get('TENCENT_COS_CUSTOM_DOMAIN') ?? '').trim();
      if (domain) {
        // Dify's client sends every request to the domain, with the key as the path.
        const url = endpointOf('TENCENT_COS_CUSTOM_DOMAIN', scheme);
        const region = s.get('TENCENT_COS_REGION');
        if (isLocalHost(url.hostname))
          return { settings: { kind: 's3', ...base, endpoint: at(url, url.hostname), region, forcePathStyle: true } };
        return { settings: { kind: 's3', ...base, bucketUrl: at(url, url.hostname), region, forcePathStyle: false } };
      }
      const region = need('TENCENT_COS_REGION');
      if (!/^[a-z0-9-]+$/.test(region)) throw bad(`${s.label('TENCENT_COS_REGION')}: "${region}" is not a COS region (ap-guangzhou, …)`);
      const endpoint = `${scheme}://cos.${region}.myqcloud.com`;
      return {
        settings: { kind: 's3', ...base, endpoint, region, forcePathStyle: false },
        note: `key storage: ${endpoint} (COS's endpoint for TENCENT_COS_REGION=${region}${s.where('TENCENT_COS_REGION')})`,
      };
    }
    case 'huawei-obs': {
      if (bool('HUAWEI_OBS_USE_OIDC'))
        throw bad(
          `${s.label('HUAWEI_OBS_USE_OIDC')}: OBS credentials from OIDC are not supported; dify-provision needs HUAWEI_OBS_ACCESS_KEY and HUAWEI_OBS_SECRET_KEY`,
        );
      const bucket = need('HUAWEI_OBS_BUCKET_NAME');
      const url = endpointOf('HUAWEI_OBS_SERVER', 'https'); // ObsClient is_secure defaults to true
      const base = { service: 'Huawei OBS', bucket, prefix: '', ...keys('HUAWEI_OBS_ACCESS_KEY', 'HUAWEI_OBS_SECRET_KEY') };
      const endpoint = at(url, url.hostname);
      if (isLocalHost(url.hostname)) return { settings: { kind: 's3', ...base, endpoint, forcePathStyle: true } };
      const m = /^obs\.([a-z0-9-]+)\./.exec(url.hostname);
      if (!m)
        throw bad(
          `${s.label('HUAWEI_OBS_SERVER')}: "${url.host}" is not an OBS region endpoint (obs.<region>.myhuaweicloud.com), which names the region S3 signatures need`,
        );
      return { settings: { kind: 's3', ...base, endpoint, region: m[1], forcePathStyle: bool('HUAWEI_OBS_PATH_STYLE') } };
    }
    case 'volcengine-tos': {
      const bucket = need('VOLCENGINE_TOS_BUCKET_NAME');
      const url = endpointOf('VOLCENGINE_TOS_ENDPOINT', 'https'); // the tos SDK's default scheme
      const region = need('VOLCENGINE_TOS_REGION');
      const base = {
        service: 'Volcengine TOS',
        bucket,
        prefix: '',
        region,
        ...keys('VOLCENGINE_TOS_ACCESS_KEY', 'VOLCENGINE_TOS_SECRET_KEY'),
      };
      if (isLocalHost(url.hostname)) return { settings: { kind: 's3', ...base, endpoint: at(url, url.hostname), forcePathStyle: true } };
      // TOS answers S3 only on its S3 endpoints (tos-s3-<region>…), virtual-host style.
      const m = /^tos-(?:s3-)?([a-z0-9-]+)\.(i?volces\.com|i?bytepluses\.com)$/.exec(url.hostname);
      if (!m)
        throw bad(
          `${s.label('VOLCENGINE_TOS_ENDPOINT')}: "${url.host}" is not a TOS endpoint (tos-<region>.volces.com), ` +
            `from which dify-provision derives the bucket's S3 endpoint (tos-s3-<region>.volces.com)`,
        );
      const endpoint = at(url, `tos-s3-${m[1]}.${m[2]}`);
      return {
        settings: { kind: 's3', ...base, endpoint, forcePathStyle: false },
        note: derived('VOLCENGINE_TOS_ENDPOINT', url.host, endpoint),
      };
    }
    case 'baidu-obs': {
      const bucket = need('BAIDU_OBS_BUCKET_NAME');
      const url = endpointOf('BAIDU_OBS_ENDPOINT', 'http'); // the BCE SDK's default protocol
      const base = { service: 'Baidu BOS', bucket, prefix: '', ...keys('BAIDU_OBS_ACCESS_KEY', 'BAIDU_OBS_SECRET_KEY') };
      if (isLocalHost(url.hostname)) return { settings: { kind: 's3', ...base, endpoint: at(url, url.hostname), forcePathStyle: true } };
      const m = /^(?:s3\.)?([a-z0-9-]+)\.bcebos\.com$/.exec(url.hostname);
      if (!m)
        throw bad(
          `${s.label('BAIDU_OBS_ENDPOINT')}: "${url.host}" is not a BOS region endpoint (<region>.bcebos.com), ` +
            `from which dify-provision derives the bucket's S3 endpoint (s3.<region>.bcebos.com)`,
        );
      const endpoint = at(url, `s3.${m[1]}.bcebos.com`);
      return {
        settings: { kind: 's3', ...base, endpoint, region: m[1], forcePathStyle: false },
        note: derived('BAIDU_OBS_ENDPOINT', url.host, endpoint),
      };
    }
  }
}
