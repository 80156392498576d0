"""The fixtures themselves: a referral goes in, the queue shows it, the chain verifies."""


def test_referral_reaches_the_queue(users):
    r = users["teacher"].post(
        "/api/referrals",
        json={
            "subject": {"given_name": "Amy", "family_name": "Stone", "date_of_birth": "2015-01-01"},
            "concerns": ["neglect"],
            "summary": "Hungry",
            "consent": "given",
        },
    )
    assert r.status_code == 201, r.text
    queue = users["officer"].get("/api/cases").json()
    assert [i["id"] for i in queue["items"]] == [r.json()["case_id"]]
    assert users["auditor"].get("/api/audit/verify").status_code == 200
