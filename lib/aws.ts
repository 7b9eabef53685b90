import { EC2Client } from '@aws-sdk/client-ec2';
import { S3Client } from '@aws-sdk/client-s3';
import type { AwsCredentialIdentity } from '@aws-sdk/types';
import type { Config } from './config.js';

/**
 * AWS clients from config; AWS_ENDPOINT_URL points both at an emulator (tests) or a private endpoint.
 * Credentials come from the default chain (the instance role in production) unless given explicitly.
 */
export function createEc2Client(aws: Config['aws'], credentials?: AwsCredentialIdentity): EC2Client {
  return new EC2Client({ region: aws.region, ...(aws.endpoint ? { endpoint: aws.endpoint } : {}), ...(credentials ? { credentials } : {}), maxAttempts: 3 });
}

export function createS3Client(aws: Config['aws'], credentials?: AwsCredentialIdentity): S3Client {
  return new S3Client({
    region: aws.region,
    ...(aws.endpoint ? { endpoint: aws.endpoint, forcePathStyle: true } : {}),
    ...(credentials ? { credentials } : {}),
    maxAttempts: 3,
  });
}
