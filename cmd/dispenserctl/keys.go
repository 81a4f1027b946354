package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

func (a *app) keysCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Create, list and revoke API keys (admin)"}
	var role, name, pools string
	var rate float64
	var burst int32
	create := &cobra.Command{
		Use:   "create --role claimer|admin|auditor",
		Short: "Create an API key; its text is printed once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, ok := dispenserv1.KeyRole_value["KEY_ROLE_"+strings.ToUpper(role)]
			if !ok {
				return fmt.Errorf("--role must be claimer, admin or auditor")
			}
			k := &dispenserv1.ApiKey{Name: name, Role: dispenserv1.KeyRole(v), Rate: rate, Burst: burst}
			if pools != "" {
				k.Pools = strings.Split(pools, ",")
			}
			c, err := a.admin()
			if err != nil {
				return err
			}
			resp, err := call(a, cmd.Context(), c.CreateKey, &dispenserv1.CreateKeyRequest{Key: k})
			if err != nil {
				return err
			}
			return show(a, resp, func(w io.Writer, r *dispenserv1.CreateKeyResponse) {
				fmt.Fprintf(a.stderr, "created %s key %s; it is shown once:\n", enumName(r.GetKey().GetRole(), "KEY_ROLE_"), r.GetKey().GetId())
				fmt.Fprintln(w, r.GetSecret())
			})
		},
	}
	create.Flags().StringVar(&role, "role", "", "claimer, admin or auditor (required)")
	create.Flags().StringVar(&name, "name", "", "a label for people")
	create.Flags().StringVar(&pools, "pools", "", "claimer keys: comma-separated pools the key may claim from")
	create.Flags().Float64Var(&rate, "rate", 0, "requests per second (0: the server's default)")
	create.Flags().Int32Var(&burst, "burst", 0, "burst (0: the server's default)")
	_ = create.MarkFlagRequired("role")

	list := &cobra.Command{
		Use:   "list",
		Short: "List API keys (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.admin()
			if err != nil {
				return err
			}
			resp, err := call(a, cmd.Context(), c.ListKeys, &dispenserv1.ListKeysRequest{})
			if err != nil {
				return err
			}
			return show(a, resp, func(w io.Writer, r *dispenserv1.ListKeysResponse) {
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tROLE\tNAME\tPOOLS\tCREATED\tREVOKED")
				for _, k := range r.GetKeys() {
					pools := strings.Join(k.GetPools(), ",")
					if pools == "" {
						pools = "*"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.GetId(), enumName(k.GetRole(), "KEY_ROLE_"),
						k.GetName(), pools, fmtTime(k.GetCreateTime()), fmtTime(k.GetRevokeTime()))
				}
				_ = tw.Flush()
			})
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke KEY_ID",
		Short: "Revoke an API key (servers stop accepting it within 5 seconds)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.admin()
			if err != nil {
				return err
			}
			resp, err := call(a, cmd.Context(), c.RevokeKey, &dispenserv1.RevokeKeyRequest{KeyId: args[0]})
			if err != nil {
				return err
			}
			return show(a, resp, func(w io.Writer, r *dispenserv1.RevokeKeyResponse) {
				fmt.Fprintf(w, "revoked %s\n", r.GetKey().GetId())
			})
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}
