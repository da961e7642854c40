// Dify's settings for the Chinese clouds' object stores → the S3-compatible endpoint, region,
// addressing and key prefix of the same bucket, as each vendor documents its S3 API.
import { describe, expect, it } from 'vitest';
import { loadConfig, requireConfig, storageOf } from '../../src/config/config.js';

const keys = (prefix: string, id = 'ACCESS_KEY', secret = 'SECRET_KEY') => ({ [`${prefix}_${id}`]: 'ak', [`${prefix}_${secret}`]: 'sk' });
const storage = (env: NodeJS.ProcessEnv) => storageOf(requireConfig(loadConfig(env), 'storageDir'));
const refused = (env: NodeJS.ProcessEnv) => () => requireConfig(loadConfig(env), 'storageDir');

describe('S3-compatible endpoints derived from Dify’s variables', () => {
  it.each<[string, NodeJS.ProcessEnv, Record<string, unknown>]>([
    [
      'aliyun-oss public, with ALIYUN_OSS_PATH',
      { ALIYUN_OSS_ENDPOINT: 'https://oss-cn-hangzhou.aliyuncs.com', ALIYUN_OSS_PATH: 'dify', ALIYUN_OSS_REGION: 'cn-hangzhou' },
      { endpoint: 'https://s3.oss-cn-hangzhou.aliyuncs.com', region: 'cn-hangzhou', prefix: 'dify/', forcePathStyle: false },
    ],
    [
      'aliyun-oss internal, bare host (oss2 adds http://), path ending in /',
      { ALIYUN_OSS_ENDPOINT: 'oss-ap-southeast-1-internal.aliyuncs.com', ALIYUN_OSS_PATH: 'a//b/' },
      { endpoint: 'http://s3.oss-ap-southeast-1-internal.aliyuncs.com', region: 'ap-southeast-1', prefix: 'a//b/' },
    ],
    [
      'aliyun-oss at an IP address: path-style',
      { ALIYUN_OSS_ENDPOINT: 'http://127.0.0.1:9000' },
      { endpoint: 'http://127.0.0.1:9000', prefix: '', forcePathStyle: true },
    ],
  ])('%s', (_name, env, expected) => {
    expect(storage({ STORAGE_TYPE: 'aliyun-oss', ALIYUN_OSS_BUCKET_NAME: 'b', ...keys('ALIYUN_OSS'), ...env })).toMatchObject({
      kind: 's3',
      service: 'Aliyun OSS',
      bucket: 'b',
      ...expected,
    });
  });

  it('tencent-cos: the region endpoint, or the custom domain in its place', () => {
    const base = { STORAGE_TYPE: 'tencent-cos', TENCENT_COS_BUCKET_NAME: 'b-1250000000', ...keys('TENCENT_COS', 'SECRET_ID') };
    expect(storage({ ...base, TENCENT_COS_REGION: 'ap-guangzhou' })).toMatchObject({
      endpoint: 'https://cos.ap-guangzhou.myqcloud.com',
      region: 'ap-guangzhou',
      forcePathStyle: false,
    });
    expect(storage({ ...base, TENCENT_COS_REGION: 'ap-guangzhou', TENCENT_COS_CUSTOM_DOMAIN: 'files.example.com' })).toMatchObject({
      bucketUrl: 'https://files.example.com',
      forcePathStyle: false,
    });
    expect(storage({ ...base, TENCENT_COS_SCHEME: 'http', TENCENT_COS_CUSTOM_DOMAIN: 'localhost:9000' })).toMatchObject({
      endpoint: 'http://localhost:9000',
      forcePathStyle: true,
    });
    expect(refused({ ...base, TENCENT_COS_REGION: 'ap-guangzhou', TENCENT_COS_SCHEME: 'your-scheme' })).toThrow(
      /TENCENT_COS_SCHEME: "your-scheme" is not http or https/,
    );
  });

  it('huawei-obs: the server itself, its region, HUAWEI_OBS_PATH_STYLE', () => {
    const base = { STORAGE_TYPE: 'huawei-obs', HUAWEI_OBS_BUCKET_NAME: 'b', ...keys('HUAWEI_OBS') };
    expect(storage({ ...base, HUAWEI_OBS_SERVER: 'https://obs.cn-north-4.myhuaweicloud.com' })).toMatchObject({
      endpoint: 'https://obs.cn-north-4.myhuaweicloud.com',
      region: 'cn-north-4',
      forcePathStyle: false,
    });
    expect(storage({ ...base, HUAWEI_OBS_SERVER: 'obs.cn-north-4.myhuaweicloud.com', HUAWEI_OBS_PATH_STYLE: 'true' })).toMatchObject({
      endpoint: 'https://obs.cn-north-4.myhuaweicloud.com',
      forcePathStyle: true,
    });
    expect(refused({ ...base, HUAWEI_OBS_SERVER: 'obs.cn-north-4.myhuaweicloud.com', HUAWEI_OBS_USE_OIDC: 'true' })).toThrow(/OIDC/);
  });

  it('volcengine-tos: its S3 endpoint (tos-s3-…), public and internal', () => {
    const base = {
      STORAGE_TYPE: 'volcengine-tos',
      VOLCENGINE_TOS_BUCKET_NAME: 'b',
      VOLCENGINE_TOS_REGION: 'cn-beijing',
      ...keys('VOLCENGINE_TOS'),
    };
    expect(storage({ ...base, VOLCENGINE_TOS_ENDPOINT: 'https://tos-cn-beijing.volces.com' })).toMatchObject({
      endpoint: 'https://tos-s3-cn-beijing.volces.com',
      region: 'cn-beijing',
      forcePathStyle: false,
    });
    expect(storage({ ...base, VOLCENGINE_TOS_ENDPOINT: 'tos-cn-beijing.ivolces.com' })).toMatchObject({
      endpoint: 'https://tos-s3-cn-beijing.ivolces.com',
    });
    expect(refused({ ...base, VOLCENGINE_TOS_ENDPOINT: 'your-server-url' })).toThrow(
      /VOLCENGINE_TOS_ENDPOINT: "your-server-url" is not a TOS endpoint/,
    );
  });

  it('baidu-obs: s3.<region>.bcebos.com', () => {
    const base = { STORAGE_TYPE: 'baidu-obs', BAIDU_OBS_BUCKET_NAME: 'b', ...keys('BAIDU_OBS') };
    expect(storage({ ...base, BAIDU_OBS_ENDPOINT: 'https://bj.bcebos.com' })).toMatchObject({
      endpoint: 'https://s3.bj.bcebos.com',
      region: 'bj',
      forcePathStyle: false,
    });
    expect(storage({ ...base, BAIDU_OBS_ENDPOINT: 'gz.bcebos.com' })).toMatchObject({ endpoint: 'http://s3.gz.bcebos.com' });
  });

  it('names the missing variable, and never takes a credential from elsewhere', () => {
    expect(
      refused({ STORAGE_TYPE: 'aliyun-oss', ALIYUN_OSS_BUCKET_NAME: 'b', ALIYUN_OSS_ENDPOINT: 'oss-cn-hangzhou.aliyuncs.com' }),
    ).toThrow(/ALIYUN_OSS_ACCESS_KEY: required for STORAGE_TYPE=aliyun-oss/);
    expect(
      refused({ STORAGE_TYPE: 'aliyun-oss', ALIYUN_OSS_BUCKET_NAME: 'b', ...keys('ALIYUN_OSS'), ALIYUN_OSS_ENDPOINT: 'files.example.com' }),
    ).toThrow(/not an OSS region endpoint/);
    expect(
      refused({
        STORAGE_TYPE: 'aliyun-oss',
        ALIYUN_OSS_BUCKET_NAME: 'b',
        ...keys('ALIYUN_OSS'),
        ALIYUN_OSS_ENDPOINT: 'oss-cn-hangzhou.aliyuncs.com',
        ALIYUN_OSS_PATH: '/x',
      }),
    ).toThrow(/starts with "\/"/);
  });
});
