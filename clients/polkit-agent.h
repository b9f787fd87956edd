/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Starts pkttyagent for this process when stdin is a terminal and we are not root (root is
 * authorized without asking), and waits until it has registered with polkit, so that a
 * password prompt can appear on the terminal while a method call waits for authorization.
 * Failing to start it is not fatal: the call then fails with the daemon's NotAuthorized. */
int polkit_agent_open(void);

/* Stops the agent again; harmless when none was started. */
void polkit_agent_close(void);
