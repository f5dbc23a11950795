"""checkout-api: takes a purchase (a request to the function's URL) and publishes it on PurchasedTopic."""

import json
import os

import boto3

sns = boto3.client("sns")


def handler(event, context):
    try:
        purchase = json.loads(event.get("body") or "{}")
    except ValueError:
        return {"statusCode": 400, "body": json.dumps({"error": "the body is not JSON"})}
    if not purchase.get("items"):
        return {"statusCode": 400, "body": json.dumps({"error": "a purchase has items"})}
    sns.publish(TopicArn=os.environ["PURCHASED_TOPIC_ARN"], Message=json.dumps(purchase))
    return {"statusCode": 202, "body": json.dumps({"accepted": len(purchase["items"])})}
