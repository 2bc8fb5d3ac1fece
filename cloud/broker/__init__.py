"""Broker identities: who may log in to the MQTT broker, with which client id, and where
each login may publish and subscribe (Mosquitto's dynamic-security plugin).

`policy` is the access policy as data, `dynsec_file` writes the plugin's file for the
deploy-time logins (cloud replicas, edge nodes, the admin), `control` changes logins at run
time through the broker's own control topic (shopper apps).
"""
