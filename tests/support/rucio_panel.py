"""The Rucio extension's panel in JupyterLab, driven in a browser as a user drives it.

Selectors are what a user sees: tab names, placeholders, labels, button
texts and the Material Icons' names (their text is the icon's name). Each
step returns when the panel shows its outcome, and ``shot`` keeps a
screenshot of it, numbered in order.

The panel polls a DID it shows as busy (fetching, replicating) every 10
seconds, on a timer of the page. The page's clock is Playwright's
(``page.clock.install()`` before it loads): ``poll_until`` moves it on by
one interval at a time instead of waiting that long, so the panel's own
timer sends each poll, only sooner.

    panel = RucioPanel(page, shots)
    panel.open(server.lab_url())
    panel.log_in("ATLAS", "alice", password, "alice")
    panel.search("data18:*")
"""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Locator, Page

PANEL_ID = "rucio-jupyterlab:panel"  # the id rucio-jupyterlab gives its side panel
POLL_INTERVAL_MS = 10_000  # how often the panel polls a busy DID (its DIDPollingManager)
SEARCH_BOX = "Enter a Data Identifier (DID)"


class RucioPanel:
    """One page of JupyterLab with the Rucio panel; screenshots go to ``shots``."""

    def __init__(self, page: Page, shots: Path) -> None:
        self.page = page
        self.shots = shots
        self.taken: list[Path] = []
        self.root = page.locator(".jp-RucioExtensionPanel")

    def open(self, url: str, width: int = 0) -> None:
        """JupyterLab at ``url``, with the Rucio panel shown in the left side bar, widened to ``width`` pixels."""
        self.page.goto(url)
        self.show()
        if width:
            # What a user does: drag the side bar's edge.
            edge = self.page.locator("#jp-main-split-panel > .lm-SplitPanel-handle").first
            box = edge.bounding_box()
            assert box is not None
            x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            right = self.root.bounding_box()
            assert right is not None
            self.page.mouse.move(x, y)
            self.page.mouse.down()
            self.page.mouse.move(x + width - right["width"], y, steps=5)
            self.page.mouse.up()

    def reload(self) -> None:
        """What the browser's reload button does: whatever the page waits for is dropped."""
        self.page.reload()
        self.show()

    def show(self) -> None:
        tab = self.page.locator(f'.jp-SideBar [data-id="{PANEL_ID}"]')
        tab.wait_for(timeout=60_000)  # the first load of JupyterLab's pages takes seconds
        # The extension shows its panel once it has its settings, and JupyterLab restores the layout it saved
        # until its splash screen goes: only then is it known whether a click on the tab shows the panel
        # (on the tab of the panel already shown, it hides it).
        self.page.locator("#jupyterlab-splash").wait_for(state="detached", timeout=60_000)
        if not self.root.is_visible():
            tab.click()
        self.root.wait_for()

    def shot(self, name: str) -> Path:
        """The page as it is now, saved as ``NN-name.png``."""
        path = self.shots / f"{len(self.taken) + 1:02d}-{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=path)
        self.taken.append(path)
        return path

    def text(self, text: str, exact: bool = False) -> Locator:
        return self.root.get_by_text(text, exact=exact)

    def icon(self, name: str) -> Locator:
        return self.root.locator("i.material-icons", has_text=name)

    # -- the tabs ------------------------------------------------------------------------------

    def settings(self) -> None:
        self.icon("settings").click()
        self.text("Active Instance").wait_for()

    def explore(self) -> None:
        self.text("Explore", exact=True).click()
        self.root.get_by_placeholder(SEARCH_BOX).wait_for()

    # -- settings ------------------------------------------------------------------------------

    def choose(self, label: str, option: str) -> None:
        """Pick ``option`` in the drop-down list under ``label``.

        The list re-renders when the settings it depends on load, and may close
        under a click: the pick is checked, and tried again if it did not take.
        """
        control = self.root.locator(f"div:text-is('{label}') + div")
        for _ in range(5):
            control.click()
            try:
                self.page.get_by_role("option", name=option, exact=True).click(timeout=3000)
            except PlaywrightError:
                self.page.keyboard.press("Escape")
                continue
            if control.get_by_text(option, exact=True).count():
                return
        raise AssertionError(f"{label}: {option} could not be picked")

    def log_in(self, instance: str, username: str, password: str, account: str) -> None:
        """Settings: ``instance`` with username and password, saved; returns once the panel says it connected."""
        self.settings()
        self.choose("Active Instance", instance)
        self.choose("Authentication", "Username & Password")
        for placeholder, value in (("Username", username), ("Password", password), ("Account", account)):
            # Each auth method has its form; the others are there, hidden.
            self.root.get_by_placeholder(placeholder, exact=True).filter(visible=True).fill(value)
        self.text("Save Settings", exact=True).click()
        self.text("Connection successful").wait_for()

    # -- explore -------------------------------------------------------------------------------

    def open_scopes(self) -> list[str]:
        """The scope list (the folder icon in the search box); the scopes it shows. Left open."""
        self.icon("topic").click()
        scopes = self.page.locator(".Popover-body [class*=listItem] [class*=textContainer]")
        scopes.first.wait_for()
        return [text.strip() for text in scopes.all_inner_texts()]

    def pick_scope(self, scope: str) -> None:
        """A scope of the open scope list: the search box then reads ``scope:``."""
        self.page.locator(".Popover-body").get_by_text(scope, exact=True).click()
        box = self.root.get_by_placeholder(SEARCH_BOX)
        assert box.input_value() == f"{scope}:"

    def type_search(self, query: str) -> None:
        """``query`` in the search box, then Enter; returns at once."""
        box = self.root.get_by_placeholder(SEARCH_BOX)
        box.fill(query)
        box.press("Enter")

    def search(self, query: str) -> list[str]:
        """Search for ``query``; the DIDs found, as the list shows them, once the answer is shown."""
        with self.page.expect_response(lambda response: "/rucio-jupyterlab/did-search?" in response.url):
            self.type_search(query)
        self.text("Search Results", exact=True).or_(self.text("Error(s) found", exact=True)).wait_for()
        return self.results()

    def results(self) -> list[str]:
        items = self.root.locator("[class*=listItemContainer] [class*=textContainer]")
        return [text.strip() for text in items.all_inner_texts()]

    def error(self) -> str:
        """The error the explore tab shows under "Error(s) found"."""
        self.text("Error(s) found", exact=True).wait_for()
        return self.root.locator("[class*=errorText]").inner_text()

    def row(self, did: str) -> Locator:
        return self.root.locator("[class*=listItemContainer]", has=self.page.get_by_text(did, exact=True))

    def files_of(self, did: str) -> list[str]:
        """The file list of a dataset or container (its eye icon); the DIDs it shows. Left open."""
        self.row(did).locator("i.material-icons", has_text="visibility").click()
        popover = self.page.locator(".Popover-body", has_text=f"Files of {did}")
        popover.locator("[class*=listItem]").first.wait_for()
        return [text.split()[0] for text in popover.locator("[class*=listItem] [class*=textContainer]")
                .all_inner_texts()]

    def close_popover(self) -> None:
        self.page.keyboard.press("Escape")
        self.page.locator(".Popover-body").wait_for(state="detached")

    def toggle(self, did: str) -> None:
        """A click on the DID's row: shows its details (and the panel starts polling it), or hides them."""
        self.text(did, exact=True).click()

    def poll_until(self, text: str, polls: int = 6) -> Locator:
        """Until the panel shows ``text``, moving the page's clock on one polling interval at a time."""
        shown = self.text(text, exact=True)
        for _ in range(polls):
            try:
                shown.wait_for(timeout=1000)
                return shown
            except PlaywrightError:
                self.page.clock.fast_forward(POLL_INTERVAL_MS)
        shown.wait_for(timeout=5000)
        return shown
