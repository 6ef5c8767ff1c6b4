"""Reminders, with nothing installed: this script needs only a copy of wheelq.py beside it.

    cp wheelq.py examples/vendored_script.py ~/bin/ && cd ~/bin
    python vendored_script.py "water the plants" 60 "call the bank" 300

Each pair of arguments is a reminder and its delay in seconds.  The reminders
are journaled in reminders.json beside the script.  Stop it with Ctrl-C and
run it again (with or without arguments): the reminders not yet shown come
back, at the time they were due.  It exits once none are left.
"""
import os
import sys
import threading

import wheelq  # the copy beside this file

HERE = os.path.dirname(os.path.abspath(__file__))

wheel = wheelq.Wheel(os.path.join(HERE, "reminders.json"), tick=0.1)
shown = threading.Event()


@wheel.task(name="remind")
def remind(text):
    sys.stdout.write("reminder: %s\n" % text)  # one write: tasks run on several threads
    sys.stdout.flush()
    shown.set()


def main(argv):
    if len(argv) % 2:
        print("usage: vendored_script.py [TEXT SECONDS]...", file=sys.stderr)
        return 2
    with wheel:
        for text, seconds in zip(argv[0::2], argv[1::2]):
            # The text is the task id, so running the script twice with the
            # same arguments does not remind you twice.
            remind.delay(text, count_down=float(seconds), task_id=text)
        try:
            while wheel.pending():
                shown.wait(0.2)
                shown.clear()
        except KeyboardInterrupt:
            wheel.stop()  # lets a running reminder finish
            left = len(wheel.pending())
            print("stopped; %d reminder%s kept for next time" % (left, "" if left == 1 else "s"),
                  flush=True)
            return 0
    print("no reminders left", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
