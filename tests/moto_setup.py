"""Prepares a moto_server for tests/cloud_disk.rs: an EC2 instance standing in for the node
and, when --auth is given, an IAM user with an access key and an allow-all policy (moto then
verifies the SigV4 signature of every later request against that key).

Prints one JSON object: {"instance_id", "zone", "private_dns_name", "access_key_id",
"secret_access_key"}. The number of requests made before authentication starts must equal
the server's INITIAL_NO_AUTH_ACTION_COUNT: see SETUP_REQUESTS.
"""

import argparse
import json

import boto3

# create_user, create_access_key, put_user_policy, run_instances
SETUP_REQUESTS = 4
BOOTSTRAP = {"aws_access_key_id": "bootstrap", "aws_secret_access_key": "bootstrap"}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--zone", default="us-east-1a")
    parser.add_argument("--auth", action="store_true")
    args = parser.parse_args()

    def client(service, **credentials):
        return boto3.client(service, endpoint_url=args.endpoint, region_name=args.region, **(credentials or BOOTSTRAP))

    credentials = dict(access_key_id="AKIDTESTNOAUTH", secret_access_key="test-secret-noauth")
    if args.auth:
        iam = client("iam")
        iam.create_user(UserName="wasmcsi")
        key = iam.create_access_key(UserName="wasmcsi")["AccessKey"]
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        iam.put_user_policy(UserName="wasmcsi", PolicyName="all", PolicyDocument=json.dumps(policy))
        credentials = dict(access_key_id=key["AccessKeyId"], secret_access_key=key["SecretAccessKey"])

    ec2 = client("ec2")
    reservation = ec2.run_instances(
        ImageId="ami-12c6146b", MinCount=1, MaxCount=1, Placement={"AvailabilityZone": args.zone}
    )
    instance = reservation["Instances"][0]
    print(json.dumps(dict(
        instance_id=instance["InstanceId"],
        zone=instance["Placement"]["AvailabilityZone"],
        private_dns_name=instance["PrivateDnsName"],
        **credentials,
    )))


if __name__ == "__main__":
    main()
