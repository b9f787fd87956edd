#!/usr/bin/python3
"""Helper run by test_authorization as a test user: a client with its own polkit agent.

It registers a fake authentication agent for its own process, then makes one
method call to cisternd, with or without the ALLOW_INTERACTIVE_AUTHORIZATION
header flag, and prints a JSON report on stdout:

    {"error": <D-Bus error name or null>, "message": ..., "agent_asked": [action ids]}

The agent never authenticates anybody: it records that polkitd asked it and
answers with an error, as an agent does when the user dismisses the dialog.
So the call can only end in NotAuthorized, but whether the agent was asked
shows whether the interactive flag reached polkitd.

Usage: polkit_agent_client.py yes|no PATH INTERFACE METHOD SIGNATURE JSON_ARGS
"""

import json
import os
import sys

import dbus
import dbus.bus
import dbus.lowlevel
import dbus.mainloop.glib
import dbus.service
from gi.repository import GLib

BUS_NAME = "org.cistern.Cistern1"
POLKIT_NAME = "org.freedesktop.PolicyKit1"
POLKIT_PATH = "/org/freedesktop/PolicyKit1/Authority"
POLKIT_IFACE = "org.freedesktop.PolicyKit1.Authority"
AGENT_IFACE = "org.freedesktop.PolicyKit1.AuthenticationAgent"
AGENT_PATH = "/org/cistern/test/Agent"
CALL_TIMEOUT = 30.0


class Agent(dbus.service.Object):

    def __init__(self, bus):
        super().__init__(bus, AGENT_PATH)
        self.asked = []

    @dbus.service.method(AGENT_IFACE, in_signature="sssa{ss}sa(sa{sv})", out_signature="")
    def BeginAuthentication(self, action_id, message, icon_name, details, cookie, identities):
        self.asked.append(str(action_id))
        raise dbus.exceptions.DBusException("the test agent dismisses every request",
                                            name="org.freedesktop.PolicyKit1.Error.Cancelled")

    @dbus.service.method(AGENT_IFACE, in_signature="s", out_signature="")
    def CancelAuthentication(self, cookie):
        pass


def process_start_time():
    with open("/proc/self/stat") as f:
        # Field 22 (starttime), counted after the parenthesised command name.
        return int(f.read().rsplit(")", 1)[1].split()[19])


def main():
    interactive, path, iface, method, signature, args = sys.argv[1:7]
    args = json.loads(args)
    loop = GLib.MainLoop()
    bus = dbus.bus.BusConnection(os.environ["DBUS_SYSTEM_BUS_ADDRESS"],
                                 mainloop=dbus.mainloop.glib.DBusGMainLoop())
    agent = Agent(bus)
    subject = dbus.Struct((dbus.String("unix-process"),
                           dbus.Dictionary({"pid": dbus.UInt32(os.getpid()),
                                            "start-time": dbus.UInt64(process_start_time())},
                                           signature="sv")))
    bus.call_blocking(POLKIT_NAME, POLKIT_PATH, POLKIT_IFACE, "RegisterAuthenticationAgent",
                      "(sa{sv})ss", (subject, "C", AGENT_PATH))

    msg = dbus.lowlevel.MethodCallMessage(BUS_NAME, path, iface, method)
    msg.set_allow_interactive_authorization(interactive == "yes")
    if signature:
        msg.append(*args, signature=signature)
    report = {}

    def on_reply(reply):
        if isinstance(reply, dbus.lowlevel.ErrorMessage):
            args = reply.get_args_list()
            report.update(error=reply.get_error_name(), message=str(args[0]) if args else "")
        else:
            report.update(error=None, message=None)
        loop.quit()

    bus.send_message_with_reply(msg, on_reply, timeout_s=CALL_TIMEOUT, require_main_loop=True)
    loop.run()
    report["agent_asked"] = agent.asked
    print(json.dumps(report))


if __name__ == "__main__":
    main()
