"""The ``slack``, ``banking`` and ``travel`` upstreams.

``slack`` carries a ``get_webpage`` tool as chat suites of agent benchmarks do: being served by
an upstream called "slack" must not make a fetch of an arbitrary URL safe.
"""

from __future__ import annotations

from load_tests.agent_corpus.model import ToolDef, prop, strings

_S, _N, _B = "string", "number", "boolean"
SLACK: tuple[ToolDef, ...] = (
    ToolDef("get_channels", "List channels", "List the channels of the workspace the user is a member of.", {}),
    ToolDef("read_channel_messages", "Read channel", "Read the latest messages of a channel.",
            {"channel": prop(_S, "Channel name, without '#'.")}, ("channel",)),
    ToolDef("read_inbox", "Read direct messages", "Read the direct messages a user received.",
            {"user": prop(_S, "The user's name.")}, ("user",)),
    ToolDef("get_users_in_channel", "Channel members", "List the members of a channel.",
            {"channel": prop(_S, "Channel name.")}, ("channel",)),
    ToolDef("send_direct_message", "Send direct message", "Send a direct message to a user.",
            {"recipient": prop(_S, "The user's name."), "body": prop(_S, "Message text.")},
            ("recipient", "body"), read_only=False, open_world=True),
    ToolDef("send_channel_message", "Post in channel", "Post a message to a channel (guests may be members).",
            {"channel": prop(_S, "Channel name."), "body": prop(_S, "Message text.")},
            ("channel", "body"), read_only=False, open_world=True),
    ToolDef("invite_user_to_slack", "Invite user", "Invite a new user to the workspace by email.",
            {"user": prop(_S, "Display name."), "user_email": prop(_S, "Their email address.")},
            ("user", "user_email"), read_only=False, open_world=True),
    ToolDef("add_user_to_channel", "Add to channel", "Add a workspace user to a channel.",
            {"user": prop(_S, "The user's name."), "channel": prop(_S, "Channel name.")},
            ("user", "channel"), read_only=False),
    ToolDef("remove_user_from_slack", "Remove user", "Remove a user from the workspace.",
            {"user": prop(_S, "The user's name.")}, ("user",), read_only=False, destructive=True),
    ToolDef("get_webpage", "Get webpage", "Fetch a web page by URL and return its text.",
            {"url": prop(_S, "The page's URL.")}, ("url",), open_world=True),
    ToolDef("post_webpage", "Post webpage", "Publish content at a URL (for sharing snippets).",
            {"url": prop(_S, "Where to post."), "content": prop(_S, "What to post.")},
            ("url", "content"), read_only=False, open_world=True),
)

BANKING: tuple[ToolDef, ...] = (
    ToolDef("get_balance", "Balance", "Return the balance of the user's account.", {}),
    ToolDef("get_iban", "Own IBAN", "Return the IBAN of the user's account.", {}),
    ToolDef("get_most_recent_transactions", "Recent transactions",
            "List the most recent transactions, incoming and outgoing, with their subjects.",
            {"n": prop("integer", "How many (default 20).")}),
    ToolDef("get_scheduled_transactions", "Scheduled transactions",
            "List standing orders and other scheduled transactions.", {}),
    ToolDef("send_money", "Send money", "Transfer money to an IBAN now.",
            {"recipient": prop(_S, "Recipient IBAN."), "amount": prop(_N, "Amount in EUR."),
             "subject": prop(_S, "Payment reference."), "date": prop(_S, "YYYY-MM-DD.")},
            ("recipient", "amount", "subject"), read_only=False, open_world=True),
    ToolDef("schedule_transaction", "Schedule transfer", "Schedule a future or recurring transfer.",
            {"recipient": prop(_S, "Recipient IBAN."), "amount": prop(_N, "Amount in EUR."),
             "subject": prop(_S, "Payment reference."), "date": prop(_S, "First execution, YYYY-MM-DD."),
             "recurring": prop(_B, "Repeat monthly.")},
            ("recipient", "amount", "subject", "date"), read_only=False, open_world=True),
    ToolDef("update_scheduled_transaction", "Update scheduled transfer",
            "Change the recipient, amount or date of a scheduled transfer.",
            {"id": prop("integer", "The scheduled transaction's id."), "recipient": prop(_S, "New IBAN."),
             "amount": prop(_N, "New amount."), "date": prop(_S, "New date.")},
            ("id",), read_only=False, open_world=True),
    ToolDef("read_file", "Read file", "Read a file the user uploaded to the bank's document box (bills, letters).",
            {"file_path": prop(_S, "The file's name.")}, ("file_path",)),
    ToolDef("get_user_info", "Profile", "Return the account holder's name, address and contact details.", {}),
    ToolDef("update_user_info", "Update profile", "Change the account holder's address or contact details.",
            {"street": prop(_S, "Street."), "city": prop(_S, "City."), "email": prop(_S, "Contact email."),
             "phone": prop(_S, "Phone number.")}, read_only=False),
    ToolDef("update_password", "Change password", "Set a new online-banking password.",
            {"password": prop(_S, "The new password.")}, ("password",), read_only=False, destructive=True),
)

TRAVEL: tuple[ToolDef, ...] = (
    ToolDef("get_hotels_in_city", "Hotels", "List hotels in a city.", {"city": prop(_S, "City.")}, ("city",)),
    ToolDef("get_hotel_reviews", "Hotel reviews", "Ratings and guest reviews of hotels.",
            {"hotel_names": strings("Hotel names.")}, ("hotel_names",), open_world=True),
    ToolDef("get_hotel_prices", "Hotel prices", "Price range per night of hotels.",
            {"hotel_names": strings("Hotel names.")}, ("hotel_names",)),
    ToolDef("get_restaurants_in_city", "Restaurants", "List restaurants in a city.",
            {"city": prop(_S, "City.")}, ("city",)),
    ToolDef("get_restaurant_reviews", "Restaurant reviews", "Ratings and guest reviews of restaurants.",
            {"restaurant_names": strings("Restaurant names.")}, ("restaurant_names",), open_world=True),
    ToolDef("get_car_rentals_in_city", "Car rentals", "List car-rental companies in a city with prices.",
            {"city": prop(_S, "City.")}, ("city",)),
    ToolDef("get_traveler_profile", "Traveler profile",
            "Return the traveler's name, passport number, loyalty numbers and saved card.", {}),
    ToolDef("reserve_hotel", "Reserve hotel", "Book a hotel room for the user.",
            {"hotel": prop(_S, "Hotel name."), "start_day": prop(_S, "Check-in, YYYY-MM-DD."),
             "end_day": prop(_S, "Check-out, YYYY-MM-DD.")},
            ("hotel", "start_day", "end_day"), read_only=False, open_world=True),
    ToolDef("reserve_restaurant", "Reserve table", "Book a table.",
            {"restaurant": prop(_S, "Restaurant name."), "start_time": prop(_S, "YYYY-MM-DD HH:MM."),
             "guests": prop("integer", "Party size.")}, ("restaurant", "start_time"), read_only=False,
            open_world=True),
    ToolDef("reserve_car_rental", "Reserve car", "Reserve a rental car.",
            {"company": prop(_S, "Company."), "start_time": prop(_S, "YYYY-MM-DD HH:MM."),
             "end_time": prop(_S, "YYYY-MM-DD HH:MM.")}, ("company", "start_time", "end_time"),
            read_only=False, open_world=True),
)
