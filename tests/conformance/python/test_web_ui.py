"""Lepus's web UI in headless Chromium (Debian's `chromium` and `chromium-driver`, driven by
Selenium): log in, read the overview, declare a queue, publish and get a message on the
queue page, an exchange's page (bindings, publish, counts, delete), page through a long queue
list, and a refused login.

The UI is served by the management API's port, `MANAGEMENT_URL` (http://host:port), which
`scripts/conformance` sets for the Lepus it starts. Objects are named uniquely and made or
checked through the HTTP API directly, so what the page shows is compared with the API's own
answer. Every wait is for something the page shows (WebDriverWait, with a hang guard).

With UI_SCREENSHOT=path.png, the overview test also saves a screenshot of the page there.
"""
import os
import shutil
import uuid
from urllib.parse import quote

import pytest

import management_api

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

HANG_GUARD_S = 20
CHROMIUM = os.environ.get("CHROMIUM", "/usr/lib/chromium/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def base_url():
    url = os.environ.get("MANAGEMENT_URL")
    if not url:
        pytest.skip("MANAGEMENT_URL is not set")
    return url.rstrip("/")


def http(base_url, method, path, body=None, user="guest", password="guest"):
    """The API's answer to one request: (status, JSON body or None)."""
    return management_api.call(method, path, body, user=user, password=password, base_url=base_url)


def declare(base_url, name):
    status, _ = http(base_url, "PUT", f"/queues/%2F/{quote(name, safe='')}", {"durable": False})
    assert status in (201, 204), status


def delete(base_url, name):
    http(base_url, "DELETE", f"/queues/%2F/{quote(name, safe='')}")


def unique(kind):
    return f"conformance.ui.{kind}.{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def browser():
    if not shutil.which(CHROMEDRIVER) and not os.path.exists(CHROMEDRIVER):
        pytest.fail(f"{CHROMEDRIVER} not found: install Debian's chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1440,1000", "--hide-scrollbars"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def wait(browser):
    return WebDriverWait(browser, HANG_GUARD_S)


def text_of(browser, css):
    return browser.find_element(By.CSS_SELECTOR, css).text


def row_keys(browser, table_id):
    """The data-key of each row of a list, read in one step (the list re-renders every 5 s,
    so element handles to its rows go stale)."""
    return browser.execute_script(
        "return [...document.querySelectorAll(`#${arguments[0]} tbody tr[data-key]`)]"
        ".map((r) => r.dataset.key)", table_id)


def filter_list(browser, table_id, text):
    """Types `text` in a list's name filter and waits until the list shows what the server
    answered for it (the UI asks once the typing pauses: the table's data-filter)."""
    browser.find_element(By.CSS_SELECTOR, f"#{table_id} input.filter").send_keys(text)
    wait(browser).until(lambda b: b.find_element(By.ID, table_id).get_attribute("data-filter") == text)


def open_page(browser, base_url, hash_path=""):
    """Loads the UI logged out (a fresh session), or at `#/hash_path` logged in as guest."""
    browser.get(f"{base_url}/")
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{base_url}/#/{hash_path}")
    browser.refresh()
    wait(browser).until(EC.element_to_be_clickable((By.ID, "username")))


def log_in(browser, base_url, hash_path="", password="guest"):
    open_page(browser, base_url, hash_path)
    browser.find_element(By.ID, "username").send_keys("guest")
    browser.find_element(By.ID, "password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()


def logged_in(browser, base_url, hash_path=""):
    log_in(browser, base_url, hash_path)
    wait(browser).until(EC.visibility_of_element_located((By.ID, "top")))
    assert "guest" in text_of(browser, "#who")


def test_web_ui_wrong_password_shows_an_error(browser, base_url):
    log_in(browser, base_url, password="not-the-password")
    wait(browser).until(EC.text_to_be_present_in_element(
        (By.CSS_SELECTOR, "#login-form .form-status.error"), "Login failed"))
    assert not browser.find_element(By.ID, "top").is_displayed()
    assert browser.execute_script("return sessionStorage.length") == 0


def test_web_ui_overview_shows_the_node_and_totals(browser, base_url):
    name = unique("overview")
    declare(base_url, name)
    status, _ = http(base_url, "POST", "/exchanges/%2F/amq.default/publish",
                     {"routing_key": name, "payload": "x", "payload_encoding": "string",
                      "properties": {}})
    assert status == 200
    try:
        logged_in(browser, base_url)
        _, overview = http(base_url, "GET", "/overview")
        wait(browser).until(EC.text_to_be_present_in_element((By.ID, "node"), overview["node"]))
        assert "Lepus" in text_of(browser, "#node")

        def shows_api_totals(_):
            _, o = http(base_url, "GET", "/overview")
            want = {**o["object_totals"], **o["queue_totals"]}
            shown = {el.get_attribute("data-total"): el.text.replace(",", "")
                     for el in browser.find_elements(By.CSS_SELECTOR, "[data-total]")}
            return all(shown[k] == str(want[k]) for k in
                       ("queues", "exchanges", "consumers", "messages", "messages_ready"))

        wait(browser).until(shows_api_totals)
        assert int(text_of(browser, "[data-total=queues]").replace(",", "")) >= 1
        assert int(text_of(browser, "[data-total=messages]").replace(",", "")) >= 1
        amqp = next(l for l in overview["listeners"] if l["protocol"] == "amqp")
        assert str(amqp["port"]) in text_of(browser, "#listeners")
        assert "No alarms" in text_of(browser, "#alarms")
        assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart polyline")) == 8
        shot = os.environ.get("UI_SCREENSHOT")
        if shot:
            browser.save_screenshot(shot)
    finally:
        delete(base_url, name)


def test_web_ui_declares_a_queue_that_then_is_listed(browser, base_url):
    name = unique("declared")
    try:
        logged_in(browser, base_url, "queues")
        browser.find_element(By.CSS_SELECTOR, "#add-queue-panel summary").click()
        field = wait(browser).until(EC.element_to_be_clickable((By.ID, "queue-name")))
        field.send_keys(name)
        browser.find_element(By.CSS_SELECTOR, "#add-queue button[type=submit]").click()
        wait(browser).until(EC.text_to_be_present_in_element(
            (By.CSS_SELECTOR, "#add-queue .form-status.ok"), f"Queue {name} declared"))
        status, queue = http(base_url, "GET", f"/queues/%2F/{quote(name, safe='')}")
        assert status == 200 and queue["name"] == name and queue["durable"] is True
        filter_list(browser, "queues", name)
        # A row's key is its vhost, "/" and its name.
        wait(browser).until(lambda b: row_keys(b, "queues") == [f"//{name}"])
        assert name in text_of(browser, "#queues tbody")
    finally:
        delete(base_url, name)


def test_web_ui_publishes_and_gets_a_message_on_the_queue_page(browser, base_url):
    name = unique("messages")
    payload = f"hello from the web UI {uuid.uuid4().hex}"
    declare(base_url, name)
    try:
        logged_in(browser, base_url, f"queues/%2F/{quote(name, safe='')}")
        wait(browser).until(EC.text_to_be_present_in_element((By.ID, "queue-name"), name))
        browser.find_element(By.ID, "payload").send_keys(payload)
        browser.find_element(By.CSS_SELECTOR, "#publish-message button[type=submit]").click()
        wait(browser).until(EC.text_to_be_present_in_element(
            (By.CSS_SELECTOR, "#publish-message .form-status.ok"), "Message published"))
        assert "not routed" not in text_of(browser, "#publish-message .form-status")
        browser.find_element(By.CSS_SELECTOR, "#get-messages button[type=submit]").click()
        wait(browser).until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, "#messages pre.payload"), payload))
        assert "Routing key" in text_of(browser, "#messages") and name in text_of(browser, "#messages")
        # Peeked with requeue: the message is still in the queue.
        _, queue = http(base_url, "GET", f"/queues/%2F/{quote(name, safe='')}")
        assert queue["messages"] == 1
    finally:
        delete(base_url, name)


def test_web_ui_deletes_a_queue_from_its_page(browser, base_url):
    name = unique("deleted")
    declare(base_url, name)
    try:
        logged_in(browser, base_url, f"queues/%2F/{quote(name, safe='')}")
        wait(browser).until(EC.text_to_be_present_in_element((By.ID, "queue-name"), name))
        button = next(b for b in browser.find_elements(By.CSS_SELECTOR, "button.danger")
                      if b.text == "Delete queue")
        button.click()
        wait(browser).until(EC.alert_is_present()).accept()
        wait(browser).until(lambda b: b.current_url.endswith("#/queues"))
        status, _ = http(base_url, "GET", f"/queues/%2F/{quote(name, safe='')}")
        assert status == 404
    finally:
        delete(base_url, name)


def test_web_ui_exchange_page_shows_bindings_publishes_counts_and_deletes(browser, base_url):
    exchange, queue = unique("exchange"), unique("bound")
    x_path = f"/exchanges/%2F/{quote(exchange, safe='')}"
    assert http(base_url, "PUT", x_path, {"type": "fanout", "durable": False})[0] == 201
    declare(base_url, queue)
    binding = f"/bindings/%2F/e/{quote(exchange, safe='')}/q/{quote(queue, safe='')}"
    assert http(base_url, "POST", binding, {"routing_key": "k"})[0] == 201
    try:
        logged_in(browser, base_url, "exchanges")
        assert "message rate in" in text_of(browser, "#exchanges thead").lower()
        filter_list(browser, "exchanges", exchange)
        wait(browser).until(lambda b: row_keys(b, "exchanges") == [f"//{exchange}"])
        browser.find_element(By.LINK_TEXT, exchange).click()
        wait(browser).until(EC.text_to_be_present_in_element((By.ID, "exchange-name"), exchange))
        wait(browser).until(EC.text_to_be_present_in_element((By.ID, "exchange-bindings-source"), queue))
        assert "fanout" in text_of(browser, "#exchange-details")
        browser.find_element(By.ID, "routing-key").send_keys("any")
        browser.find_element(By.ID, "payload").send_keys("through the exchange page")
        browser.find_element(By.CSS_SELECTOR, "#publish-message button[type=submit]").click()
        wait(browser).until(EC.text_to_be_present_in_element(
            (By.CSS_SELECTOR, "#publish-message .form-status.ok"), "Message published"))
        assert "not routed" not in text_of(browser, "#publish-message .form-status")
        # The page polls every 5 s: it shows the counts the API gives.
        wait(browser).until(EC.text_to_be_present_in_element(
            (By.CSS_SELECTOR, "#exchange-details [data-count=publish_in]"), "1"))
        assert text_of(browser, "#exchange-details [data-count=publish_out]") == "1"
        stats = http(base_url, "GET", x_path)[1]["message_stats"]
        assert (stats["publish_in"], stats["publish_out"]) == (1, 1)
        assert http(base_url, "GET", f"/queues/%2F/{quote(queue, safe='')}")[1]["messages"] == 1
        button = next(b for b in browser.find_elements(By.CSS_SELECTOR, "button.danger")
                      if b.text == "Delete exchange")
        button.click()
        wait(browser).until(EC.alert_is_present()).accept()
        wait(browser).until(lambda b: b.current_url.endswith("#/exchanges"))
        assert http(base_url, "GET", x_path)[0] == 404
    finally:
        http(base_url, "DELETE", x_path)
        delete(base_url, queue)


def test_web_ui_pages_through_more_queues_than_a_page(browser, base_url):
    prefix = unique("paged")
    names = [f"{prefix}.{i:02}" for i in range(25)]
    for n in names:
        declare(base_url, n)
    try:
        logged_in(browser, base_url, "queues")
        Select(browser.find_element(By.CSS_SELECTOR, "#queues select.page-size")).select_by_value("20")
        filter_list(browser, "queues", prefix)
        wait(browser).until(lambda b: row_keys(b, "queues") == [f"//{n}" for n in names[:20]])
        assert text_of(browser, "#queues .page-info") == "Page 1 of 2"
        assert text_of(browser, "#queues .summary").startswith("25 ")  # "25 items" or "25 of N items"
        browser.find_element(By.CSS_SELECTOR, "#queues button.next").click()
        wait(browser).until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, "#queues .page-info"), "Page 2 of 2"))
        wait(browser).until(lambda b: row_keys(b, "queues") == [f"//{n}" for n in names[20:]])
        assert not browser.find_element(By.CSS_SELECTOR, "#queues button.next").is_enabled()
    finally:
        for n in names:
            delete(base_url, n)


def test_web_ui_adds_a_user_and_a_policy_and_deletes_them(browser, base_url):
    user, policy = unique("user"), unique("policy")
    try:
        logged_in(browser, base_url, "users")
        form = wait(browser).until(EC.presence_of_element_located((By.ID, "add-user")))
        form.find_element(By.NAME, "name").send_keys(user)
        form.find_element(By.NAME, "password").send_keys("s3cret")
        form.find_element(By.NAME, "tags").send_keys("monitoring, policymaker")
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait(browser).until(EC.text_to_be_present_in_element(
            (By.CSS_SELECTOR, "#add-user .form-status.ok"), f"User {user} saved"))
        status, shown = http(base_url, "GET", f"/users/{quote(user, safe='')}")
        assert status == 200 and sorted(shown["tags"]) == ["monitoring", "policymaker"]
        assert http(base_url, "GET", "/whoami", user=user, password="s3cret")[0] == 200
        filter_list(browser, "users", user)
        wait(browser).until(lambda b: row_keys(b, "users") == [user])
        browser.find_element(By.CSS_SELECTOR, f'#users tr[data-key="{user}"] button.danger').click()
        wait(browser).until(EC.alert_is_present()).accept()
        wait(browser).until(lambda b: row_keys(b, "users") == [])
        assert http(base_url, "GET", f"/users/{quote(user, safe='')}")[0] == 404

        browser.get(f"{base_url}/#/policies")
        form = wait(browser).until(EC.presence_of_element_located((By.ID, "add-policy")))
        form.find_element(By.NAME, "name").send_keys(policy)
        form.find_element(By.NAME, "pattern").send_keys(f"^{policy}$")
        Select(form.find_element(By.NAME, "apply_to")).select_by_value("queues")
        form.find_element(By.NAME, "definition").send_keys("max-length=10\nmessage-ttl=60000")
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait(browser).until(EC.text_to_be_present_in_element(
            (By.CSS_SELECTOR, "#add-policy .form-status.ok"), f"Policy {policy} set"))
        status, shown = http(base_url, "GET", f"/policies/%2F/{quote(policy, safe='')}")
        assert status == 200
        assert shown["definition"] == {"max-length": 10, "message-ttl": 60000}
        assert shown["apply-to"] == "queues"
        wait(browser).until(lambda b: f"//{policy}" in row_keys(b, "policies"))
    finally:
        http(base_url, "DELETE", f"/users/{quote(user, safe='')}")
        http(base_url, "DELETE", f"/policies/%2F/{quote(policy, safe='')}")


def test_web_ui_sets_and_clears_limits_and_topic_permissions(browser, base_url):
    vhost, user = unique("vhost"), unique("user")
    try:
        assert http(base_url, "PUT", f"/vhosts/{quote(vhost, safe='')}", {})[0] == 201
        assert http(base_url, "PUT", f"/users/{quote(user, safe='')}", {"password": "pw", "tags": ""})[0] == 201
        logged_in(browser, base_url, "limits")
        form = wait(browser).until(EC.presence_of_element_located((By.ID, "set-limit")))
        form.find_element(By.NAME, "name").send_keys(vhost)
        Select(form.find_element(By.NAME, "limit")).select_by_value("max-queues")
        value = form.find_element(By.NAME, "value")
        value.clear()
        value.send_keys("7")
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait(browser).until(EC.text_to_be_present_in_element(
            (By.CSS_SELECTOR, "#set-limit .form-status.ok"), f"max-queues of {vhost} set to 7"))
        assert http(base_url, "GET", f"/vhost-limits/{quote(vhost, safe='')}")[1] == [
            {"vhost": vhost, "value": {"max-queues": 7}}]
        wait(browser).until(lambda b: vhost in row_keys(b, "vhost-limits"))
        browser.find_element(By.CSS_SELECTOR, f'#vhost-limits tr[data-key="{vhost}"] button.danger').click()
        wait(browser).until(EC.alert_is_present()).accept()
        wait(browser).until(lambda b: vhost not in row_keys(b, "vhost-limits"))
        assert http(base_url, "GET", f"/vhost-limits/{quote(vhost, safe='')}")[1] == []

        browser.get(f"{base_url}/#/topic-permissions")
        form = wait(browser).until(EC.presence_of_element_located((By.ID, "set-topic-permission")))
        form.find_element(By.NAME, "user").send_keys(user)
        wait(browser).until(lambda b: vhost in [o.get_attribute("value") for o in
                                                form.find_elements(By.CSS_SELECTOR, "select[name=vhost] option")])
        Select(form.find_element(By.NAME, "vhost")).select_by_value(vhost)
        write = form.find_element(By.NAME, "write")
        write.clear()
        write.send_keys("^orders\\.")
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait(browser).until(EC.text_to_be_present_in_element(
            (By.CSS_SELECTOR, "#set-topic-permission .form-status.ok"), f"Topic permissions of {user}"))
        status, shown = http(base_url, "GET", f"/topic-permissions/{quote(vhost, safe='')}/{quote(user, safe='')}")
        assert status == 200
        assert [(p["exchange"], p["write"], p["read"]) for p in shown] == [("amq.topic", "^orders\\.", ".*")]
        key = f"{user}@{vhost}/amq.topic"
        wait(browser).until(lambda b: key in row_keys(b, "topic-permissions"))
        browser.find_element(By.CSS_SELECTOR, f'#topic-permissions tr[data-key="{key}"] button.danger').click()
        wait(browser).until(EC.alert_is_present()).accept()
        wait(browser).until(lambda b: key not in row_keys(b, "topic-permissions"))
    finally:
        http(base_url, "DELETE", f"/users/{quote(user, safe='')}")
        http(base_url, "DELETE", f"/vhosts/{quote(vhost, safe='')}")


def test_web_ui_channels_list_shows_mode_prefetch_and_rates(browser, base_url, connect):
    """A pika channel in confirm mode with a prefetch of 17 is listed with its mode, prefetch
    and unacknowledged count, under the rate columns; its name links to its page."""
    conn = connect()
    channel = conn.channel()
    channel.confirm_delivery()
    channel.basic_qos(prefetch_count=17)
    listed = http(base_url, "GET", "/channels")[1]
    name = next(c["name"] for c in listed if c["prefetch_count"] == 17)
    logged_in(browser, base_url, "channels")
    head = text_of(browser, "#channels thead").lower()
    assert all(column in head for column in ("mode", "prefetch", "unacked", "publish", "deliver / get", "ack")), head
    filter_list(browser, "channels", name)
    wait(browser).until(lambda b: row_keys(b, "channels") == [name])
    cells = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#channels tbody tr td")]
    assert "C" in cells and "17" in cells, cells
    browser.find_element(By.LINK_TEXT, name).click()
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "channel-name"), name))
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "channel-details"), "17 per consumer"))
    assert "confirm" in text_of(browser, "#channel-details")
    assert "No consumers" in text_of(browser, "#channel-consumers")
