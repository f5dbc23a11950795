"""confirmation-job: one order confirmation for every purchase published on PurchasedTopic."""

import json


def handler(event, context):
    for record in event["Records"]:
        purchase = json.loads(record["Sns"]["Message"])
        # the confirmation itself (an email) goes here; the log shows what would be sent
        print(json.dumps({"confirm": purchase.get("order"), "items": len(purchase.get("items", []))}))
