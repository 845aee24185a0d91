"""An SNS topic with an SQS queue subscribed to it, on a moto_server, for sosw-rs's SNS notifier test.

    python moto_sns.py setup <endpoint> <name>      -> {"topic": ARN, "queue": URL}
    python moto_sns.py read <endpoint> <queue url>  -> the notifications received: [{"Subject": ..., "Message": ...}]
"""
import json
import sys

import boto3

command, endpoint = sys.argv[1:3]
kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
sns = boto3.client("sns", **kw)
sqs = boto3.client("sqs", **kw)
if command == "setup":
    name = sys.argv[3]
    topic = sns.create_topic(Name=name)["TopicArn"]
    queue = sqs.create_queue(QueueName=name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    print(json.dumps({"topic": topic, "queue": queue}))
elif command == "read":
    out = []
    while True:
        got = sqs.receive_message(QueueUrl=sys.argv[3], MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not got:
            break
        for m in got:
            body = json.loads(m["Body"])
            out.append({"Subject": body.get("Subject"), "Message": body.get("Message")})
            sqs.delete_message(QueueUrl=sys.argv[3], ReceiptHandle=m["ReceiptHandle"])
    print(json.dumps(out))
