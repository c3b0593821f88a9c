#!/bin/sh
# cloudmeta's script for `dhclient -sf`: applies the lease's address, MTU and routes to
# $interface and nothing else. It never writes /etc/resolv.conf, the hostname or any file: the
# network namespace does not isolate files, and Debian's own dhclient-script would rewrite the
# host's resolv.conf. Routes: the classless static routes of option 121 when present (RFC 3442:
# then the routers option is ignored), else a default route via the first router.

prefix_len() {
    n=0
    IFS=.
    for octet in $1; do
        case $octet in
            255) n=$((n + 8)) ;; 254) n=$((n + 7)) ;; 252) n=$((n + 6)) ;; 248) n=$((n + 5)) ;;
            240) n=$((n + 4)) ;; 224) n=$((n + 3)) ;; 192) n=$((n + 2)) ;; 128) n=$((n + 1)) ;;
        esac
    done
    unset IFS
    echo "$n"
}

# $1: "32 169 254 169 254 192 0 2 2 0 192 0 2 1" (width, significant octets, router) ...
classless_routes() {
    set -- $1
    while [ $# -ge 5 ]; do
        width=$1
        shift
        significant=$(((width + 7) / 8))
        net=""
        i=0
        while [ $i -lt 4 ]; do
            if [ $i -lt $significant ]; then part=$1; shift; else part=0; fi
            net="${net:+$net.}$part"
            i=$((i + 1))
        done
        router="$1.$2.$3.$4"
        shift 4
        if [ "$router" = "0.0.0.0" ]; then
            ip -4 route replace "$net/$width" dev "$interface"
        else
            ip -4 route replace "$net/$width" via "$router" dev "$interface" onlink
        fi
    done
}

case "$reason" in
    MEDIUM | PREINIT)
        ip link set dev "$interface" up
        ;;
    BOUND | RENEW | REBIND | REBOOT)
        len=$(prefix_len "${new_subnet_mask:-255.255.255.255}")
        if [ -n "${old_ip_address:-}" ] && [ "$old_ip_address" != "$new_ip_address" ]; then
            ip -4 addr flush dev "$interface"
        fi
        if [ -n "${new_interface_mtu:-}" ] && [ "$new_interface_mtu" -ge 576 ]; then
            ip link set dev "$interface" mtu "$new_interface_mtu"
        fi
        ip -4 addr replace "$new_ip_address/$len" ${new_broadcast_address:+broadcast "$new_broadcast_address"} \
            valid_lft "${new_dhcp_lease_time:-forever}" preferred_lft "${new_dhcp_lease_time:-forever}" \
            dev "$interface"
        if [ -n "${new_rfc3442_classless_static_routes:-}" ]; then
            classless_routes "$new_rfc3442_classless_static_routes"
        else
            for router in ${new_routers:-}; do
                ip -4 route replace default via "$router" dev "$interface" onlink
                break
            done
        fi
        ;;
    EXPIRE | FAIL | RELEASE | STOP)
        if [ -n "${old_ip_address:-}" ]; then
            ip -4 addr flush dev "$interface"
        fi
        ;;
    TIMEOUT)
        exit 1
        ;;
esac
exit 0
