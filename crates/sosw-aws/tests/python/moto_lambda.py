"""Creates an IAM role and a Python Lambda function `worker` on a moto_server (Lambda without Docker), for
sosw-rs's Lambda invoker test; prints the function ARN. Usage: python moto_lambda.py <endpoint> [name]
"""
import boto3, io, zipfile, json, sys
ep = sys.argv[1]
kw = dict(endpoint_url=ep, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
import urllib.request
urllib.request.urlopen(urllib.request.Request(ep + "/moto-api/config", data=json.dumps({"lambda": {"use_docker": False}}).encode(), method="POST", headers={"Content-Type": "application/json"}))
iam = boto3.client("iam", **kw)
name = sys.argv[2] if len(sys.argv) > 2 else "worker"
role = iam.create_role(RoleName=f"{name}-role", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w") as z:
    z.writestr("lambda_function.py", "def lambda_handler(event, context):\n    return event\n")
lam = boto3.client("lambda", **kw)
fn = lam.create_function(FunctionName=name, Runtime="python3.11", Role=role, Handler="lambda_function.lambda_handler", Code={"ZipFile": buf.getvalue()})
print(fn["FunctionArn"])
